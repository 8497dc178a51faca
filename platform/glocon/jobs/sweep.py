"""Ray Tune sweep over tau, patch method, epochs (and loss weights), scored by a plugin objective.

    python jobs/sweep.py --config configs/sweep-demo.yaml [key=value ...]

Rerun the same command (same ``name``) to resume an interrupted sweep with ``Tuner.restore``.
Writes results.md / results.csv, best-pretrain.yaml and objective_vs_epoch.png in
``<storage_path>/<name>/``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from glocon.config import split_cli
from glocon.jobmain import run_job

if TYPE_CHECKING:  # annotations only
    from glocon.tune.space import SweepConfig


def main(argv: list[str] | None = None) -> int:
    from glocon.tune.space import load_sweep_config

    return run_job(argv, lambda args: load_sweep_config(*split_cli(args)), sweep)


def sweep(cfg: SweepConfig) -> int:
    from glocon.tune.sweep import run_sweep  # only once the config has loaded: the module pulls in Ray Tune

    res = run_sweep(cfg)
    best = res.best
    print(f"sweep {cfg.name}: {len(res.trials)} trials, {len(res.stopped_early)} stopped early by ASHA"
          + (" (resumed)" if res.restored else ""))
    if best is not None:
        print(f"best: {best.trial_id} {best.params} {cfg.objective.metric}={best.objective:.4f}")
    print(f"table: {res.table_md}\ntable: {res.table_csv}\nbest config: {res.best_config}\nplot: {res.plot}")
    failed = [t for t in res.trials if t.status == "error"]
    if failed:
        print(f"{len(failed)} trial(s) failed: " + "; ".join(f"{t.trial_id}: {t.error}" for t in failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
