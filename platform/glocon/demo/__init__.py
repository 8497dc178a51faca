"""``make demo``: the whole pipeline on one data set, as resumable stages.

shards of the train and val splits -> Fig. 4 picture -> pretraining on the train split (Ray Train,
2 workers; inductive) -> loss curves -> dense probe of the prior against its controls -> bank + one
query -> QGNet fit on base classes (with and without the prior map) -> 1-/5-shot evaluation on
novel classes against ``proto`` -> ``<out>/report.md``.

Each stage's config includes the hashes of what it reads, so a rerun redoes only what changed
(``glocon.pipeline``). Each stage is the same library call its own job makes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from glocon.config import save_resolved
from glocon.demo.config import DemoConfig
from glocon.demo.report import store_line, store_report, write_report
from glocon.demo.stages import (
    stage_bank,
    stage_fewshot,
    stage_imagenet_prior,
    stage_pretrain,
    stage_probe,
    stage_shards,
    stage_superpixels,
    stage_untrained_prior,
)
from glocon.fewshot.variants import variants
from glocon.io import atomic_write_json, atomic_write_text
from glocon.pipeline import StageResult


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


def explore_command(out: Path) -> str:
    """How to serve the explorer on the demo's folder: configs/explore-demo.yaml names runs/demo;
    a demo written elsewhere gets its own copy of that config, pointed at its folder."""
    if out.resolve() == (Path.cwd() / "runs" / "demo").resolve() or not Path("configs/explore-demo.yaml").is_file():
        return "python jobs/explore.py --config configs/explore-demo.yaml"
    text = Path("configs/explore-demo.yaml").read_text().replace("runs/demo", str(out.resolve()))
    target = atomic_write_text(out / "explore.yaml", text)
    return f"python jobs/explore.py --config {target}"
