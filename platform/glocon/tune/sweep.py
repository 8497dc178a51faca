"""``run_sweep(cfg)``: a Ray Tune sweep of pretraining runs, scored downstream, stopped by ASHA.

Layout of a sweep folder (``<storage_path>/<name>/``)::

    tuner.pkl, experiment_state-*.json, <trial dirs>/   Ray Tune's own state (Tuner.restore reads it)
    trains/trial-<id>/                                 each trial's Ray Train run (checkpoints, prior.pt)
    sweep.resolved.yaml                                this sweep's config, checked again on restore
    results.csv, results.md, results.json              one row per trial
    best-pretrain.yaml                                 the best trial as a ready-to-run pretraining config
    objective_vs_epoch.png                             the objective of every trial at every epoch

Rerunning the same command (same ``name`` and ``storage_path``) resumes with
``Tuner.restore``: finished trials are kept as they are, unfinished ones start again and their
Ray Train run continues from its latest checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from glocon.config import read_yaml, to_yaml
from glocon.errors import ConfigError
from glocon.io import atomic_write_json, atomic_write_text
from glocon.paths import resolve
from glocon.preflight import check_sweep
from glocon.raycluster import init_ray
# ReleasePlacementGroups stays importable from here: the tuner.pkl of a sweep started before it
# moved to glocon.tune.resources names it glocon.tune.sweep.ReleasePlacementGroups (restore unpickles it)
from glocon.tune.objective import draw_objective_episodes, objective_config, probe_objective, trial_path
from glocon.tune.resources import ReleasePlacementGroups, plan_concurrency
from glocon.tune.results import SweepResults, write_results
from glocon.tune.space import (
    SweepConfig,
    base_pretrain_dict,
    check_targets,
    flat_params,
    get_dotted,
    max_epochs,
    n_trials,
    param_space,
    set_dotted,
    trial_pretrain_dict,
    validate_pretrain,
)

if TYPE_CHECKING:  # annotations only
    from glocon.fewshot.config import FewShotConfig
    from glocon.tune.dashboard import SweepDashboard
    from glocon.tune.trainable import TrialSetup

RESOLVED = "sweep.resolved.yaml"
TRAINS = "trains"
# Parts of the config that define *what* is swept; a restore must not change them.
FROZEN_ON_RESTORE = ("pretrain", "pretrain_overrides", "space", "targets", "num_samples", "seed", "objective", "asha", "loss_metric")


# -- restore ------------------------------------------------------------------------------------


def _frozen(cfg: SweepConfig) -> dict[str, Any]:
    data = cfg.model_dump(mode="json")
    return {k: data[k] for k in FROZEN_ON_RESTORE}


def check_same_sweep(cfg: SweepConfig, exp_dir: Path) -> None:
    """A restore must run the sweep that was started: name what changed if it is not."""
    saved_path = exp_dir / RESOLVED
    if not saved_path.is_file():
        return
    saved = read_yaml(saved_path, "sweep record") or {}
    now = _frozen(cfg)
    changed = [k for k in FROZEN_ON_RESTORE if saved.get(k) != now[k]]
    if changed:
        raise ConfigError(
            f"sweep {cfg.name!r} in {exp_dir} was started with a different {', '.join(changed)} "
            f"(see {saved_path}); rerun with the same config to resume, or give it a new name=..."
        )


# -- the sweep ----------------------------------------------------------------------------------


def prepare(cfg: SweepConfig) -> tuple[dict[str, Any], FewShotConfig | None]:
    """Everything that can be checked before Ray starts: targets, base config, objective config."""
    from glocon.plugins import load_plugin

    check_targets(cfg)
    cfg.storage_path = resolve(cfg.storage_path, "storage_path")  # the sweep folder must outlive a Ray job
    base = base_pretrain_dict(cfg)
    shards = get_dotted(base, "data.shards")
    if isinstance(shards, str):
        set_dotted(base, "data.shards", trial_path(shards, "pretrain data.shards"))
    set_dotted(base, cfg.targets.storage_path, trial_path(str(get_dotted(base, cfg.targets.storage_path)), f"pretrain {cfg.targets.storage_path}"))
    # Each trial's config must validate: check every grid point now, not an hour into the sweep.
    for tune_cfg in _grid_points(cfg):
        data = trial_pretrain_dict(base, flat_params(tune_cfg, cfg.space), cfg.targets)
        set_dotted(data, cfg.targets.num_workers, cfg.resources.workers_per_trial)  # as each trial will
        trial = validate_pretrain(data, f"sweep grid point {tune_cfg} with num_workers={cfg.resources.workers_per_trial}")
    plugin_cfg = None
    if cfg.objective.kind != "probe":
        plugin = load_plugin(cfg.objective.plugin)
        plugin_cfg = objective_config(cfg, cfg.experiment_dir)
        plugin.make_config(plugin_cfg.model, f"objective.config.model ({cfg.objective.plugin})")
    # shards, readers per shard, objective data: before Ray starts
    check_sweep(trial, plugin_cfg, probe_objective(cfg, base) if plugin_cfg is None else None)
    return base, plugin_cfg


def _grid_points(cfg: SweepConfig) -> list[dict[str, Any]]:
    import itertools

    s = cfg.space
    dims: dict[str, list[Any]] = {}
    if s.tau is not None:
        dims["tau"] = list(s.tau.grid) if s.tau.grid is not None else [s.tau.loguniform.low, s.tau.loguniform.high]
    if s.patch_method is not None:
        dims["patch_method"] = list(s.patch_method)
    if s.epochs is not None:
        dims["epochs"] = list(s.epochs)
    if s.loss_weights is not None:
        dims["weights"] = [w.label for w in s.loss_weights]
    return [dict(zip(dims, combo)) for combo in itertools.product(*dims.values())] or [{}]




def run_sweep(cfg: SweepConfig, *, stream: TextIO | None = None) -> SweepResults:
    import ray
    from ray import tune

    from glocon.tune.trainable import pretrain_trial

    base, plugin_cfg = prepare(cfg)
    exp_dir = cfg.experiment_dir
    init_ray(cfg.ray)
    concurrency, use_gpu = plan_concurrency(cfg, ray.cluster_resources())
    restorable = _open_sweep_folder(cfg, exp_dir)
    probe, episodes = _write_objective(cfg, exp_dir, base, plugin_cfg)
    setup = _trial_setup(cfg, exp_dir, base, plugin_cfg, probe, use_gpu)
    trainable = tune.with_resources(tune.with_parameters(pretrain_trial, setup=setup), {"cpu": cfg.resources.driver_cpus})
    scheduler = _scheduler(cfg, max_epochs(cfg, base))
    dashboard = _dashboard(cfg, base, stream, concurrency)
    release = ReleasePlacementGroups(exp_dir / "placement_groups")
    tuner = _tuner(cfg, exp_dir, trainable, scheduler, [dashboard, release], concurrency, restore=restorable)
    with dashboard:
        grid = tuner.fit()
    return write_results(cfg, base, grid, exp_dir, restored=restorable, concurrency=concurrency, episodes=episodes)


def _open_sweep_folder(cfg: SweepConfig, exp_dir: Path) -> bool:
    """Whether this run restores the sweep in ``exp_dir`` (checked to be the same sweep); a new
    sweep never lands in the folder of another. The folder is made and this config written to it."""
    from ray import tune

    restorable = cfg.restore and exp_dir.exists() and tune.Tuner.can_restore(str(exp_dir))
    if restorable:
        check_same_sweep(cfg, exp_dir)
    elif exp_dir.exists() and (exp_dir / RESOLVED).exists() and not cfg.restore:
        raise ConfigError(f"sweep folder {exp_dir} exists and restore=false: give a new name=... or remove it")
    exp_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(exp_dir / RESOLVED, to_yaml(cfg))
    return bool(restorable)


def _write_objective(cfg: SweepConfig, exp_dir: Path, base: dict[str, Any], plugin_cfg: FewShotConfig | None) -> tuple[dict[str, Any] | None, Path | None]:
    """The objective's resolved settings, written to the sweep folder: (the probe objective's
    settings, None) or, for a plugin objective, (None, its episode file, drawn here once)."""
    probe = probe_objective(cfg, base) if plugin_cfg is None else None
    if plugin_cfg is None:
        atomic_write_json(exp_dir / "objective.resolved.json", {"kind": "probe", **probe})
        episodes = None
    else:
        atomic_write_text(exp_dir / "objective.resolved.yaml", to_yaml(plugin_cfg))
        episodes = draw_objective_episodes(plugin_cfg)
    return probe, episodes


def _trial_setup(
    cfg: SweepConfig, exp_dir: Path, base: dict[str, Any], plugin_cfg: FewShotConfig | None, probe: dict[str, Any] | None, use_gpu: bool
) -> TrialSetup:
    """What every trial is given (``glocon.tune.trainable.pretrain_trial``)."""
    from glocon.tune.trainable import TrialSetup

    return TrialSetup(
        base_pretrain=base,
        space=cfg.space,
        targets=cfg.targets,
        train_storage=str(exp_dir / TRAINS),
        pg_dir=str(exp_dir / "placement_groups"),
        plugin=cfg.objective.plugin,
        plugin_config=plugin_cfg.model_dump(mode="json") if plugin_cfg is not None else {},  # FewShotConfig
        metric=cfg.objective.metric,
        probe=probe,
        workers_per_trial=cfg.resources.workers_per_trial,
        use_gpu=use_gpu,
        cpus_per_worker=cfg.resources.cpus_per_worker,
    )


def _scheduler(cfg: SweepConfig, max_t: int) -> Any:
    """ASHA over pretraining epochs (``asha.enabled``), else FIFO: every trial runs all its epochs."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if cfg.asha.enabled:
        return ASHAScheduler(
            time_attr="epoch",
            max_t=max_t,
            grace_period=min(cfg.asha.grace_period, max_t),
            reduction_factor=cfg.asha.reduction_factor,
        )
    return FIFOScheduler()


def _dashboard(cfg: SweepConfig, base: dict[str, Any], stream: TextIO | None, concurrency: int) -> SweepDashboard:
    from glocon.tune.dashboard import SweepDashboard

    return SweepDashboard(
        f"sweep {cfg.name}",
        metric=cfg.objective.metric,
        loss_key=cfg.loss_metric,
        total_trials=n_trials(cfg),
        default_epochs=get_dotted(base, cfg.targets.epochs),
        stream=stream or sys.stdout,
        plain=None if cfg.dashboard else True,
        concurrency=concurrency,
    )


def _tuner(cfg: SweepConfig, exp_dir: Path, trainable: Any, scheduler: Any, callbacks: list[Any], concurrency: int, *, restore: bool) -> Any:
    """The Tuner of this sweep: ``Tuner.restore`` of the one in ``exp_dir``, or a new one."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if restore:
        tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True, resume_errored=True)
        # Tune pickled the first run's callbacks into tuner.pkl; show this run's live view instead.
        run_config = tuner._local_tuner.get_run_config()
        run_config.callbacks = [c for c in (run_config.callbacks or []) if type(c).__name__ not in ("SweepDashboard", "ReleasePlacementGroups")]
        run_config.callbacks += callbacks
        return tuner
    return tune.Tuner(
        trainable,
        param_space=param_space(cfg.space),
        tune_config=tune.TuneConfig(
            # Tune's own default searcher, seeded (loguniform draws of tau repeat) and capped
            # at ``concurrency``: what ``max_concurrent_trials`` does without a search_alg
            # (ray/tune/tune.py), which Tune ignores once a BasicVariantGenerator is given.
            search_alg=BasicVariantGenerator(random_state=cfg.seed, max_concurrent=concurrency),
            metric=cfg.objective.metric,
            mode="max",
            scheduler=scheduler,
            num_samples=cfg.num_samples,
        ),
        run_config=tune.RunConfig(
            name=cfg.name,
            storage_path=str(exp_dir.parent),
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
            verbose=0,
        ),
    )
