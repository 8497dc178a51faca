"""Time `make demo`'s pipeline end to end, stage by stage, in a fresh output folder.

    python bench/demo.py                 # the embedded default data, configs/demo.yaml
    python bench/demo.py --keep runs/demo-bench

Installation is not timed (issue 19's goal: 15 minutes on 2 cores after installation). The
folder, the embedded-data cache and the feature store (``GLOCON_STORE``) all start empty, so every
frozen forward pass is paid once. The baseline measured in the same process is a second run over
the same folder: every stage must be reused, so its wall time is the pipeline's bookkeeping
overhead. Headline figures last: `demo_probe_s`, `demo_fewshot_s`, `demo_rerun_s`, `demo_wall_s`.
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
GOAL_S = 15 * 60


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    parser.add_argument("--keep", default=None, help="output folder to keep (default: a temp folder, removed)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for the demo config")
    args = parser.parse_args()
    os.chdir(REPO)  # the demo's configs use repo-relative paths

    from glocon.config import load_config
    from glocon.demo import run_demo
    from glocon.demo.config import DemoConfig

    out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="glocon-demo-bench-"))
    cache = out / "cache"  # a fresh embedded-data cache too, so its generation is timed
    os.environ["GLOCON_CACHE"] = str(cache)
    os.environ["GLOCON_STORE"] = str(out / "store")  # an empty feature store: nothing computed before is read
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
    store = first.get("store") or {}
    if store:
        print(f"feature store: {store['hits']} hits, {store['misses']} misses, read {store['bytes_read'] / 2**20:.0f} MiB, wrote {store['bytes_written'] / 2**20:.0f} MiB")
    stages = first["stages"]
    print(f"store_hit_rate = {store.get('hit_rate') or 0:.3f}")
    print(f"demo_probe_s = {stages.get('probe', {}).get('wall_s', 0):.1f}")
    print(f"demo_fewshot_s = {sum(st['wall_s'] for n, st in stages.items() if n.startswith('fewshot-')):.1f}")
    print(f"demo_rerun_s = {rerun:.1f}")
    print(f"demo_wall_vs_15min_goal = {wall / GOAL_S:.3f}")
    print(f"demo_wall_s = {wall:.1f}")
    return 0 if reused else 1


if __name__ == "__main__":
    sys.exit(main())
