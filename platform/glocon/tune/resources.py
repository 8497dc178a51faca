"""How many trials a sweep runs at once, and freeing the cluster of the trials Tune has ended."""

from __future__ import annotations

import math
import time
from pathlib import Path

from ray.tune import Callback

from glocon.errors import ConfigError
from glocon.tune.space import SweepConfig, n_trials


def plan_concurrency(cfg: SweepConfig, cluster: dict[str, float]) -> tuple[int, bool]:
    """(max concurrent trials, use_gpu) from what the cluster has and what one trial takes.

    A trial holds ``driver_cpus`` + ``workers_per_trial`` x ``cpus_per_worker`` CPUs, and one GPU
    per worker when GPUs are used. Without this cap Tune starts a driver per CPU, and the Train
    runs of the extra drivers wait for workers that cannot be placed (docs.ray.io, Train V2
    "Hyperparameter tuning with Ray Tune": limit concurrent Train runs).
    """
    r = cfg.resources
    gpus = float(cluster.get("GPU", 0.0))
    cpus = float(cluster.get("CPU", 0.0))
    use_gpu = gpus > 0 if r.use_gpu is None else r.use_gpu
    if r.max_concurrent_trials is not None:
        # Explicit: trusted as is, e.g. an autoscaling cluster (``ray up``) that has no GPU node
        # yet and will add them when the trials' Train workers ask.
        return max(1, min(r.max_concurrent_trials, n_trials(cfg))), use_gpu
    hint = " (on an autoscaling cluster that will add nodes, set resources.max_concurrent_trials)"
    if use_gpu and gpus < r.workers_per_trial:
        raise ConfigError(
            f"resources.use_gpu=true needs {r.workers_per_trial} GPU(s) per trial "
            f"(resources.workers_per_trial), but the Ray cluster has {gpus:g}{hint}"
        )
    cpu_need = r.driver_cpus + r.workers_per_trial * r.cpus_per_worker
    fit = math.floor(cpus / cpu_need + 1e-9) if cpu_need > 0 else 10**6
    if use_gpu:
        fit = min(fit, math.floor(gpus / r.workers_per_trial + 1e-9))
    if fit < 1:
        raise ConfigError(
            f"one trial needs {cpu_need:g} CPUs (resources.driver_cpus={r.driver_cpus:g} + "
            f"resources.workers_per_trial={r.workers_per_trial} x resources.cpus_per_worker={r.cpus_per_worker:g}), "
            f"but the Ray cluster has {cpus:g}{hint}"
        )
    return max(1, min(fit, n_trials(cfg))), use_gpu


# -- placement groups of stopped trials -------------------------------------------------------


def release_placement_groups(pg_file: Path) -> int:
    """Remove every placement group listed in ``pg_file`` that still exists; returns how many."""
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

    if not pg_file.is_file():
        return 0
    removed = 0
    for line in pg_file.read_text().split():
        pg = PlacementGroup(PlacementGroupID(bytes.fromhex(line)))
        try:
            state = placement_group_table(pg).get("state")
        except Exception:  # unknown to this cluster (e.g. recorded before a restart)
            continue
        if state not in (None, "REMOVED"):
            remove_placement_group(pg)
            removed += 1
    return removed


class ReleasePlacementGroups(Callback):
    """When Tune ends a trial (ASHA stop, error, or done), free its Train workers' CPUs/GPUs.
    See ``glocon.tune.trainable.PlacementGroupRecorder`` for why this is needed.

    It releases at the trial's end and again, every few seconds, for every ended trial: a
    controller that outlives its killed driver for a moment could still start a new group.
    """

    def __init__(self, pg_dir: Path, every_s: float = 5.0) -> None:
        self.pg_dir = Path(pg_dir)
        self.every_s = every_s
        self._last = 0.0

    def _release(self, trial) -> None:
        release_placement_groups(self.pg_dir / f"{trial.trial_id}.txt")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._release(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._release(trial)

    def on_step_end(self, iteration, trials, **info):
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        for t in trials:
            if t.status in ("TERMINATED", "ERROR"):
                self._release(t)
