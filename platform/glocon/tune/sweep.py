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

import csv
import io
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ray.tune import Callback

from glocon.config import read_yaml, to_yaml, validate_config
from glocon.errors import ConfigError
from glocon.io import atomic_open, atomic_write_json, atomic_write_text
from glocon.paths import resolve
from glocon.preflight import check_sweep
from glocon.raycluster import init_ray
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

RESOLVED = "sweep.resolved.yaml"
TRAINS = "trains"
# Parts of the config that define *what* is swept; a restore must not change them.
FROZEN_ON_RESTORE = ("pretrain", "pretrain_overrides", "space", "targets", "num_samples", "seed", "objective", "asha", "loss_metric")


@dataclass
class TrialResult:
    trial_id: str
    status: str  # done | stopped early | error | pending
    params: dict[str, Any]
    epochs: int | None  # configured
    epochs_run: int
    objective: float | None  # at the last epoch it reached
    best_objective: float | None
    best_epoch: int | None
    loss: float | None
    curve: list[tuple[int, float]] = field(default_factory=list)  # (epoch, objective)
    path: str = ""
    error: str | None = None


@dataclass
class SweepResults:
    experiment_dir: Path
    trials: list[TrialResult]
    best: TrialResult | None
    table_md: Path
    table_csv: Path
    best_config: Path | None
    plot: Path
    restored: bool
    concurrency: int
    episodes: Path | None = None  # the objective's episode file (validation, base classes)

    @property
    def stopped_early(self) -> list[TrialResult]:
        return [t for t in self.trials if t.status == "stopped early"]


# -- resources ----------------------------------------------------------------------------------


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


# -- results ------------------------------------------------------------------------------------


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def collect(result_grid: Any, cfg: SweepConfig, base: dict[str, Any]) -> list[TrialResult]:
    metric = cfg.objective.metric
    rows: list[TrialResult] = []
    for res in result_grid:
        tcfg = dict(res.config or {})
        params = {k: tcfg[k] for k in ("tau", "patch_method", "epochs", "weights") if k in tcfg}
        epochs = tcfg.get("epochs", get_dotted(base, cfg.targets.epochs))
        df = res.metrics_dataframe
        curve: list[tuple[int, float]] = []
        if df is not None and metric in df.columns:
            sub = df[[c for c in ("epoch", metric) if c in df.columns]].dropna()
            for i, rec in enumerate(sub.to_dict("records")):
                curve.append((int(rec.get("epoch", i + 1)), float(rec[metric])))
        # A restarted trial re-reports nothing twice (Train resumes after its last epoch), but be safe.
        curve = sorted(dict(curve).items())
        last = res.metrics or {}
        epochs_run = curve[-1][0] if curve else 0
        best_epoch, best_obj = (max(curve, key=lambda c: c[1]) if curve else (None, None))
        trial_id = getattr(res, "path", "") and Path(res.path).name
        tid = last.get("trial_id") or (trial_id or "?")
        if res.error is not None:
            status = "error"
        elif epochs_run == 0:
            status = "pending"
        elif epochs is not None and epochs_run < int(epochs):
            status = "stopped early"
        else:
            status = "done"
        rows.append(
            TrialResult(
                trial_id=str(tid),
                status=status,
                params=params,
                epochs=int(epochs) if epochs is not None else None,
                epochs_run=epochs_run,
                objective=curve[-1][1] if curve else None,
                best_objective=best_obj,
                best_epoch=best_epoch,
                loss=_num(last.get(cfg.loss_metric)),
                curve=curve,
                path=str(res.path),
                error=(f"{type(res.error).__name__}: {res.error}".splitlines()[0] if res.error is not None else None),
            )
        )
    rows.sort(key=lambda r: r.trial_id)
    return rows


def pick_best(trials: list[TrialResult]) -> TrialResult | None:
    """Highest objective at the trial's last epoch, among trials that ran all their epochs
    (a trial ASHA stopped was, by construction, below its rung's cutoff)."""
    done = [t for t in trials if t.status == "done" and t.objective is not None]
    pool = done or [t for t in trials if t.objective is not None]
    return max(pool, key=lambda t: (t.objective, -(t.epochs or 0))) if pool else None


COLUMNS = ["trial_id", "status", "tau", "patch_method", "epochs", "weights", "epochs_run", "objective",
           "best_objective", "best_epoch", "contrastive_loss"]


def table_rows(trials: list[TrialResult], cfg: SweepConfig, base: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for t in trials:
        weights = t.params.get("weights")
        if weights is None:
            g = get_dotted(base, cfg.targets.loss_weight_global)
            l_ = get_dotted(base, cfg.targets.loss_weight_local)
            weights = "global" if l_ == 0 else "local" if g == 0 else "both"
        out.append({
            "trial_id": t.trial_id,
            "status": t.status,
            "tau": t.params.get("tau", get_dotted(base, cfg.targets.tau)),
            "patch_method": t.params.get("patch_method", get_dotted(base, cfg.targets.patch_method)),
            "epochs": t.epochs,
            "weights": weights,
            "epochs_run": t.epochs_run,
            "objective": t.objective,
            "best_objective": t.best_objective,
            "best_epoch": t.best_epoch,
            "contrastive_loss": t.loss,
        })
    return out


def _cell(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"
    return str(v)


def write_tables(rows: list[dict[str, Any]], out_dir: Path, title: str, best_id: str | None) -> tuple[Path, Path]:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r[k] is None else r[k]) for k in COLUMNS})
    csv_path = atomic_write_text(out_dir / "results.csv", buf.getvalue())
    lines = [f"# {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = [_cell(r[k]) for k in COLUMNS]
        if r["trial_id"] == best_id:
            cells[0] = f"**{cells[0]}** (best)"
        lines.append("| " + " | ".join(cells) + " |")
    md_path = atomic_write_text(out_dir / "results.md", "\n".join(lines) + "\n")
    return md_path, csv_path


def write_best_config(best: TrialResult, trial_config: dict[str, Any], cfg: SweepConfig, base: dict[str, Any], out_dir: Path) -> Path:
    """The best trial's pretraining config, validated, with a fresh run name and the base
    storage path: ``python jobs/pretrain.py --config best-pretrain.yaml`` runs it."""
    data = trial_pretrain_dict(base, flat_params(trial_config, cfg.space), cfg.targets)
    set_dotted(data, cfg.targets.name, f"{cfg.name}-best")
    pcfg = validate_pretrain(data, "best config")
    header = (
        f"# Best trial of sweep {cfg.name!r}: {best.trial_id}\n"
        f"# {objective_name(cfg)} objective ({cfg.objective.metric}) = {best.objective:.6f} at epoch {best.epochs_run}"
        f"; contrastive loss = {_cell(best.loss)}\n"
        f"# Run it: python jobs/pretrain.py --config {out_dir / 'best-pretrain.yaml'}\n"
    )
    return atomic_write_text(out_dir / "best-pretrain.yaml", header + to_yaml(pcfg))


def write_plot(trials: list[TrialResult], out_dir: Path, metric: str, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for t in trials:
        if not t.curve:
            continue
        xs, ys = zip(*t.curve)
        label = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items()) or t.trial_id
        style = "--" if t.status == "stopped early" else "-"
        (line,) = ax.plot(xs, ys, style, marker="o", label=f"{label} [{t.status}]")
        if t.status == "stopped early":
            ax.plot(xs[-1], ys[-1], "x", color=line.get_color(), markersize=10)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("pretraining epoch")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = out_dir / "objective_vs_epoch.png"
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)
    return path


# -- the sweep ----------------------------------------------------------------------------------


def _abs(path: str | None, key: str = "path") -> str | None:
    """Trials run in their own working directories: every input path must be absolute, and
    outlive a Ray job (``glocon.paths.resolve``: against $GLOCON_SUBMIT_DIR, or refused)."""
    return resolve(path, key)


def objective_name(cfg: SweepConfig) -> str:
    return "probe retrieval mIoU" if cfg.objective.kind == "probe" else cfg.objective.plugin


def objective_config(cfg: SweepConfig, exp_dir: Path) -> FewShotConfig:
    """The few-shot config the objective runs with (validated; paths absolute; episodes kept
    in the sweep folder unless the config names a folder of its own)."""
    from glocon.config import load_config
    from glocon.fewshot.runner import FewShotConfig

    src = cfg.objective.config
    if isinstance(src, str):
        fcfg = load_config(FewShotConfig, src, cfg.objective.overrides)
    else:
        fcfg = load_config(FewShotConfig, None, [])
        fcfg = validate_config(FewShotConfig, _merge(fcfg.model_dump(mode="json"), src), "objective.config")
        if cfg.objective.overrides:
            import tempfile

            with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
                fh.write(to_yaml(fcfg))
            fcfg = load_config(FewShotConfig, fh.name, cfg.objective.overrides)
            Path(fh.name).unlink()
    data = fcfg.model_dump(mode="json")
    shards = data["data"]["shards"]
    key = "objective.config.data.shards"
    data["data"]["shards"] = _abs(shards, key) if not isinstance(shards, list) else [_abs(p, f"{key}[{i}]") for i, p in enumerate(shards)]
    data["data"]["fss_split_dir"] = _abs(data["data"]["fss_split_dir"], "objective.config.data.fss_split_dir")
    data["prior"] = None  # the prior is the trial's, never one named in the config
    if data["episodes_dir"] == FewShotConfig().episodes_dir:
        data["episodes_dir"] = str(exp_dir / "episodes")
    data["episodes_dir"] = _abs(data["episodes_dir"], "objective.config.episodes_dir")
    if cfg.objective.plugin and not data.get("plugin"):
        data["plugin"] = cfg.objective.plugin
    return validate_config(FewShotConfig, data, "objective.config (resolved)")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def draw_objective_episodes(plugin_cfg: FewShotConfig) -> Path:
    """Draw (or reuse, validated) the objective's episode file once, in the driver, before any
    trial: every trial then scores the same episodes, and the file is there to audit. Same
    calls as ``glocon.fewshot.runner.objective``: validation mode, base classes of the fold."""
    from glocon.fewshot.batches import CachedSource
    from glocon.fewshot.episodes import episodes_for
    from glocon.fewshot.runner import fold_split, folds_of, open_source

    src = CachedSource(open_source(plugin_cfg))
    fold = plugin_cfg.objective.fold if plugin_cfg.objective.fold is not None else folds_of(plugin_cfg)[0]
    base, novel = fold_split(plugin_cfg, fold, src.class_index)
    _, path, _ = episodes_for(
        src, plugin_cfg.episodes_dir, benchmark=plugin_cfg.data.benchmark, fold=fold, mode="val",
        shots=plugin_cfg.objective.shots, n_episodes=plugin_cfg.objective.episodes, seed=plugin_cfg.seed,
        base=base, novel=novel,
    )  # fmt: skip
    return path


def prepare(cfg: SweepConfig) -> tuple[dict[str, Any], FewShotConfig | None]:
    """Everything that can be checked before Ray starts: targets, base config, objective config."""
    from glocon.plugins import load_plugin

    check_targets(cfg)
    cfg.storage_path = resolve(cfg.storage_path, "storage_path")  # the sweep folder must outlive a Ray job
    base = base_pretrain_dict(cfg)
    shards = get_dotted(base, "data.shards")
    if isinstance(shards, str):
        set_dotted(base, "data.shards", _abs(shards, "pretrain data.shards"))
    set_dotted(base, cfg.targets.storage_path, _abs(str(get_dotted(base, cfg.targets.storage_path)), f"pretrain {cfg.targets.storage_path}"))
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


def probe_objective(cfg: SweepConfig, base: dict[str, Any]) -> dict[str, Any]:
    """The probe objective's settings with absolute paths (trials run in other working directories)."""
    p = cfg.objective.probe.model_dump(mode="json")
    p["train_shards"] = _abs(p["train_shards"] or str(get_dotted(base, "data.shards")), "objective.probe.train_shards")
    p["val_shards"] = _abs(p["val_shards"], "objective.probe.val_shards") if p["val_shards"] else ""
    return p


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
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from glocon.tune.dashboard import SweepDashboard
    from glocon.tune.trainable import TrialSetup, pretrain_trial

    base, plugin_cfg = prepare(cfg)
    exp_dir = cfg.experiment_dir
    init_ray(cfg.ray)
    concurrency, use_gpu = plan_concurrency(cfg, ray.cluster_resources())

    restorable = cfg.restore and exp_dir.exists() and tune.Tuner.can_restore(str(exp_dir))
    if restorable:
        check_same_sweep(cfg, exp_dir)
    elif exp_dir.exists() and (exp_dir / RESOLVED).exists() and not cfg.restore:
        raise ConfigError(f"sweep folder {exp_dir} exists and restore=false: give a new name=... or remove it")
    exp_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(exp_dir / RESOLVED, to_yaml(cfg))
    probe = probe_objective(cfg, base) if plugin_cfg is None else None
    if plugin_cfg is None:
        atomic_write_json(exp_dir / "objective.resolved.json", {"kind": "probe", **probe})
        episodes = None
    else:
        atomic_write_text(exp_dir / "objective.resolved.yaml", to_yaml(plugin_cfg))
        episodes = draw_objective_episodes(plugin_cfg)

    setup = TrialSetup(
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
    trainable = tune.with_resources(tune.with_parameters(pretrain_trial, setup=setup), {"cpu": cfg.resources.driver_cpus})

    max_t = max_epochs(cfg, base)
    if cfg.asha.enabled:
        scheduler = ASHAScheduler(
            time_attr="epoch",
            max_t=max_t,
            grace_period=min(cfg.asha.grace_period, max_t),
            reduction_factor=cfg.asha.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    dashboard = SweepDashboard(
        f"sweep {cfg.name}",
        metric=cfg.objective.metric,
        loss_key=cfg.loss_metric,
        total_trials=n_trials(cfg),
        default_epochs=get_dotted(base, cfg.targets.epochs),
        stream=stream or sys.stdout,
        plain=None if cfg.dashboard else True,
        concurrency=concurrency,
    )

    release = ReleasePlacementGroups(exp_dir / "placement_groups")
    if restorable:
        tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True, resume_errored=True)
        # Tune pickled the first run's callbacks into tuner.pkl; show this run's live view instead.
        run_config = tuner._local_tuner.get_run_config()
        run_config.callbacks = [c for c in (run_config.callbacks or []) if type(c).__name__ not in ("SweepDashboard", "ReleasePlacementGroups")]
        run_config.callbacks += [dashboard, release]
    else:
        tuner = tune.Tuner(
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
                callbacks=[dashboard, release],
                failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
                verbose=0,
            ),
        )
    with dashboard:
        grid = tuner.fit()
    return write_results(cfg, base, grid, exp_dir, restored=bool(restorable), concurrency=concurrency, episodes=episodes)


def write_results(cfg: SweepConfig, base: dict[str, Any], grid: Any, exp_dir: Path, *, restored: bool, concurrency: int, episodes: Path | None = None) -> SweepResults:
    trials = collect(grid, cfg, base)
    best = pick_best(trials)
    title = f"Sweep {cfg.name}: {objective_name(cfg)} objective ({cfg.objective.metric}, higher is better)"
    rows = table_rows(trials, cfg, base)
    md, csv_path = write_tables(rows, exp_dir, title, best.trial_id if best else None)
    best_path = None
    if best is not None:
        res = next(r for r in grid if str(Path(r.path).name) == Path(best.path).name)
        best_path = write_best_config(best, dict(res.config), cfg, base, exp_dir)
    plot = write_plot(trials, exp_dir, cfg.objective.metric, title)
    atomic_write_json(exp_dir / "results.json", {
        "name": cfg.name,
        "best": best.trial_id if best else None,
        "restored": restored,
        "concurrency": concurrency,
        "objective_episodes": str(episodes) if episodes else None,
        "trials": [t.__dict__ for t in trials],
    })
    return SweepResults(exp_dir, trials, best, md, csv_path, best_path, plot, restored, concurrency, episodes)
