"""The demo's ``report.md``: the few-shot table and its paired differences, the probe against its
controls, the figures, the stages' wall times and what the feature store did."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from glocon.demo.config import DemoConfig
from glocon.fewshot.variants import variants
from glocon.io import atomic_write_text
from glocon.pipeline import StageResult


def results_table(results: dict[str, dict[str, Any]]) -> str:
    shots = sorted({int(k) for r in results.values() for k in r["mean"]})
    head = "| model | " + " | ".join(f"{k}-shot mIoU | {k}-shot FB-IoU" for k in shots) + " |"
    sep = "|---|" + "---|---|" * len(shots)
    rows = [head, sep]
    for name, r in results.items():
        cells = []
        for k in shots:
            m = r["mean"].get(str(k), {})
            miou = f"{100 * m['miou']:.1f}" if "miou" in m else "-"
            if m.get("miou_std"):
                miou += f" ± {100 * m['miou_std']:.1f}"
            if "miou_ci" in m:
                miou += f" [{100 * m['miou_ci'][0]:.1f}, {100 * m['miou_ci'][1]:.1f}]"
            cells += [miou, f"{100 * m['fb_iou']:.1f}" if "fb_iou" in m else "-"]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def comparisons_table(cfg: DemoConfig, by: dict[str, StageResult]) -> str:
    """The paired differences on the same episode files (``glocon.fewshot.variants.comparisons``)."""
    from glocon.fewshot.evaluate import compare
    from glocon.fewshot.variants import comparisons

    rows = ["| A - B | " + " | ".join(f"{k}-shot mIoU difference [95% paired-bootstrap CI]" for k in ("1", "5")) + " |", "|---|---|---|"]
    for a, b in comparisons(variants(cfg.plugins)):
        if f"fewshot-{a}" not in by or f"fewshot-{b}" not in by:
            continue
        r = compare(Path(by[f"fewshot-{a}"].outputs["results"]).parent, Path(by[f"fewshot-{b}"].outputs["results"]).parent)["shots"]
        cells = [f"{100 * r[k]['difference']:+.1f} [{100 * r[k]['ci_low']:+.1f}, {100 * r[k]['ci_high']:+.1f}]" if k in r else "-" for k in ("1", "5")]
        rows.append(f"| {a} - {b} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def write_report(out: Path, cfg: DemoConfig, stages: list[StageResult], store: dict[str, Any] | None = None) -> Path:
    by = {s.name: s for s in stages}
    results = {}
    for name in variants(cfg.plugins):
        st = by.get(f"fewshot-{name}")
        if st:
            results[name] = json.loads(Path(st.outputs["results"]).read_text())

    def rel(p: str | Path) -> str:
        return str(Path(p).resolve().relative_to(out.resolve()))

    lines = [
        "# glocon demo report",
        "",
        f"Data: `{cfg.data.layout}`" + (f" at `{cfg.data.root}`" if cfg.data.root else " (embedded default, generated offline)") + f"; folds {cfg.folds}.",
        "",
        overrides_line(cfg),
        "",
        "## Few-shot results (novel classes, same episodes for every model)",
        "",
        results_table(results) if results else "(no few-shot results)",
        "",
        "mIoU in %: mean ± std over the episode seeds [95% bootstrap CI]. Paired differences on the same episodes:",
        "",
        comparisons_table(cfg, by) if results else "",
        "",
        "Per-fold and per-class tables: " + ", ".join(f"[{n}]({rel(Path(by[f'fewshot-{n}'].outputs['results']).with_suffix('.md'))})" for n in results),
        "",
        "## Does the prior learn? The dense probe against its controls",
        "",
        Path(by["probe"].outputs["table"]).read_text().split("\n", 2)[2].strip() if "probe" in by else "(no probe)",
        "",
        f"Against pretraining epoch: ![]({rel(by['probe'].outputs['plot'])})" if "probe" in by else "",
        "",
        "## Figures",
        "",
        f"- Superpixels (paper Fig. 4): ![]({rel(by['superpixels'].outputs['figure'])})",
        f"- Pretraining loss curves: ![]({rel(by['pretrain'].outputs['curves'])})",
        f"- Bank query contact sheet: ![]({rel(by['bank'].outputs['sheet'])})",
    ]
    for name in results:
        st = by[f"fewshot-{name}"]
        for key, png in sorted(st.outputs.items()):
            if key.startswith("curves-"):
                kept = (st.info.get("fit") or {}).get(key[len("curves-") :], {})
                lines.append(f"- Learning curve, {name} {key[len('curves-') :]} (loss, base-train and held-out base-val mIoU; kept step {kept.get('best_step')}): ![]({rel(png)})")
        if st.info.get("chosen"):
            lines.append(f"- {name}: settings chosen on base-val episodes: `{' '.join(st.info['chosen']['chosen'])}`")
    for name in results:
        folder = Path(by[f"fewshot-{name}"].outputs["results"]).parent
        for png in sorted(folder.glob("fig5-*.png")):
            lines.append(f"- Region maps and predictions, {name} (paper Fig. 5): ![]({rel(png)})")
    lines += ["", "## Stages", "", "| stage | wall s | reused |", "|---|---|---|"]
    lines += [f"| {s.name} | {s.wall_s:.1f} | {'yes' if s.reused else 'no'} |" for s in stages]
    if store is not None:
        lines += ["", "## Feature store", "", store_line(store)]
    return atomic_write_text(out / "report.md", "\n".join(lines) + "\n")


def overrides_line(cfg: DemoConfig) -> str:
    """What the demo changed on top of each stage's config: its sizes, where they are smaller than the benches'."""
    parts = [f"{stage}: `{' '.join(ov)}`" for stage, ov in cfg.overrides.items() if ov]
    return ("Sizes and settings on top of each stage's config (`configs/demo.yaml`; the benches run the configs as they are): " + "; ".join(parts) + ".") if parts else "Every stage ran its config as it is."


def store_report(since: float) -> dict[str, Any] | None:
    """What the feature store did during this demo, summed over every process that used it (the
    fit and Ray workers too): hits, misses, bytes read and written, and its size now."""
    from dataclasses import asdict

    from glocon.featstore import open_store, stats_since

    store = open_store()
    if store is None:
        return None
    s = stats_since(store.root, since)
    return {**asdict(s), "hit_rate": s.hit_rate, "root": str(store.root), "size_bytes": sum(e.bytes for e in store.entries())}


def store_line(s: dict[str, Any]) -> str:
    rate = f"{100 * s['hit_rate']:.0f}%" if s.get("hit_rate") is not None else "-"
    return (f"feature store {s['root']}: {s['hits']} hits, {s['misses']} misses (hit rate {rate}); "
            f"read {s['bytes_read'] / 2**20:.0f} MiB instead of encoding it again, wrote {s['bytes_written'] / 2**20:.0f} MiB; "
            f"holds {s['size_bytes'] / 2**20:.0f} MiB (`glocon store ls|du|prune`)")  # fmt: skip
