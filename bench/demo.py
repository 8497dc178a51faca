"""Time `make demo`'s pipeline end to end, stage by stage, in a fresh output folder.

    python bench/demo.py                 # the embedded default data, configs/demo.yaml
    python bench/demo.py --keep runs/demo-bench

Installation is not timed (the goal is "under 20 minutes after installation"). The baseline
measured in the same process is a second run over the same folder: every stage must be reused,
so its wall time is the pipeline's bookkeeping overhead. Headline figure last: `demo_wall_s`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL_S = 20 * 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    parser.add_argument("--keep", default=None, help="output folder to keep (default: a temp folder, removed)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for the demo config")
    args = parser.parse_args()
    os.chdir(REPO)  # the demo's configs use repo-relative paths

    from glocon.config import load_config
    from glocon.demo import DemoConfig, run_demo

    out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="glocon-demo-bench-"))
    cache = out / "cache"  # a fresh embedded-data cache too, so its generation is timed
    os.environ["GLOCON_CACHE"] = str(cache)
    cfg = load_config(DemoConfig, args.config, [f"out={out / 'demo'}", *args.overrides])
    t0 = time.perf_counter()
    first = run_demo(cfg)
    wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    second = run_demo(cfg)
    rerun = time.perf_counter() - t1
    print(f"load average at end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    for name, st in first["stages"].items():
        print(f"stage {name:>24}: {st['wall_s']:8.1f} s")
    reused = all(st["reused"] for st in second["stages"].values())
    print(f"rerun reused every stage: {reused}")
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    print(f"demo_rerun_s = {rerun:.1f}")
    print(f"demo_wall_vs_20min_goal = {wall / GOAL_S:.3f}")
    print(f"demo_wall_s = {wall:.1f}")
    return 0 if reused else 1


if __name__ == "__main__":
    sys.exit(main())
