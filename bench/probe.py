"""The demo's probe stage, with and without the feature store (issue 19).

    python bench/demo.py --keep runs/demo-bench       # a finished demo (its shards and its pretraining run)
    python bench/probe.py --demo runs/demo-bench/demo

Reruns the probe exactly as the demo's probe stage ran it (its resolved config, read from
``<demo>/stages/probe.json``: the pretrained prior, its untrained control over 3 seeds, Lite0's
ImageNet features, the epoch curve as pretraining's epoch-end probe recorded it) three times in
one process, each into its own folder:

- ``off``: no store, every frozen map computed (the baseline);
- ``cold``: an empty store (what a fresh ``make demo`` pays: maps computed once and kept);
- ``warm``: the same store again (a rerun with other probe settings, another bench, the next demo).

The figures of the three runs must agree (the store changes no result). Headline figures last:
``probe_stage_s`` (cold, the demo's case; goal <= 120), ``probe_store_speedup`` (off / warm; goal
>= 5) and ``probe_cold_speedup`` (off / cold).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", default=str(REPO / "runs" / "demo"), help="a finished demo folder (holds stages/probe.json)")
    ap.add_argument("--keep", default=None, help="keep the three probe folders here (default: a temp folder, removed)")
    args = ap.parse_args(argv)
    record = Path(args.demo) / "stages" / "probe.json"
    if not record.is_file():
        print(f"error: {record}: not found; run the demo first (python bench/demo.py --keep runs/demo-bench)", file=sys.stderr)
        return 2
    os.chdir(REPO)

    from glocon.featstore import StoreConfig
    from glocon.probe.config import ProbeConfig
    from glocon.probe.run import FIGURES, run_probe

    stage = json.loads(record.read_text())
    base = ProbeConfig.model_validate(stage["config"]["cfg"])
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="glocon-probe-bench-"))
    store_root = work / "store"
    shutil.rmtree(store_root, ignore_errors=True)
    runs: dict[str, tuple[float, dict]] = {}
    for name, store in (("off", StoreConfig(enabled=False)), ("cold", StoreConfig(root=str(store_root))), ("warm", StoreConfig(root=str(store_root)))):
        cfg = base.model_copy(update={"out": str(work / name), "store": store})
        t0 = time.perf_counter()
        res = run_probe(cfg, log=lambda m: print(f"[{name}] {m}", flush=True))
        runs[name] = (time.perf_counter() - t0, res)
        print(f"[{name}] {runs[name][0]:.1f} s; store: {res.get('store')}", flush=True)
    agree = True
    for prior, row in runs["off"][1]["priors"].items():
        for fig in FIGURES:
            vals = [r["priors"][prior].get(fig) for _, r in runs.values()]
            if vals[0] is None:
                continue
            means = [v["mean"] for v in vals]
            same = max(means) - min(means) <= 1e-3
            agree &= same
            print(f"{prior:>45} {fig:>16}: off {means[0]:.4f}  cold {means[1]:.4f}  warm {means[2]:.4f}{'' if same else '  DIFFERENT'}")
    print(f"load average at end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; demo's own probe stage took {stage['wall_s']:.1f} s")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    t_off, t_cold, t_warm = (runs[n][0] for n in ("off", "cold", "warm"))
    print(f"probe_figures_agree = {int(agree)}")
    print(f"probe_off_s = {t_off:.1f}")
    print(f"probe_warm_s = {t_warm:.1f}")
    print(f"probe_cold_speedup = {t_off / t_cold:.2f}")
    print(f"probe_store_speedup = {t_off / t_warm:.2f}")
    print(f"probe_stage_s = {t_cold:.1f}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
