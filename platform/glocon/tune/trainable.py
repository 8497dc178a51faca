"""One sweep trial: a Ray Tune *function* that runs the pretraining job's own ``TorchTrainer``.

Ray Train V2 deprecates ``Tuner(trainer)``; its Tune integration is a driver function that
builds and fits a trainer, with ``ray.tune.integration.ray_train.TuneReportCallback`` in the
trainer's ``RunConfig.callbacks`` to forward reports to Tune (docs.ray.io, "Hyperparameter
tuning with Ray Tune", Train V2). ``ObjectiveReportCallback`` extends that callback: at each
epoch checkpoint (the ones that carry a ``prior.pt`` export) it scores the prior with the
plugin's ``objective`` and forwards the score together with the trainer's own metrics.

Where the objective runs: Train V2 calls user callbacks in its controller actor, which it pins
to the node of the driver (``DataParallelTrainer._initialize_and_run_controller``: num_cpus=0,
node label of the caller). The driver's CPU reservation (``resources.driver_cpus``) therefore
pays for the objective, and no extra task has to wait for a CPU the workers hold.

Resume: each trial's Train run is named after the Tune trial id under the sweep folder, so a
trial that Tune restarts after ``Tuner.restore`` rebuilds the same ``RunConfig(storage_path,
name)`` and Ray Train continues from that run's latest checkpoint.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.train.v2._internal.execution.callback import WorkerGroupCallback
from ray.tune.integration.ray_train import TuneReportCallback

from glocon.tune.space import Targets, flat_params, set_dotted, trial_pretrain_dict, validate_pretrain, SearchSpace

PRIOR_NAME = "prior.pt"  # the export each epoch-end checkpoint of the pretraining loop carries
EPOCH_KEY = "epoch"


@dataclass
class TrialSetup:
    """Everything a trial needs besides its sampled params (sent once via ``tune.with_parameters``)."""

    base_pretrain: dict[str, Any]
    space: SearchSpace
    targets: Targets
    train_storage: str  # where the trials' Ray Train runs live (inside the sweep folder)
    pg_dir: str  # where each trial records its worker group's placement group (see PlacementGroupRecorder)
    plugin: str
    plugin_config: dict[str, Any]  # a FewShotConfig as a dict (paths already absolute)
    metric: str = "objective"
    probe: dict[str, Any] | None = None  # a ProbeObjective (paths absolute) when the objective is the dense probe
    workers_per_trial: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0


def find_prior(checkpoint_dir: str | Path) -> Path | None:
    p = Path(checkpoint_dir) / PRIOR_NAME
    return p if p.is_file() else None


def sanitize_objective(value: Any) -> tuple[float, bool]:
    """A prior whose features went NaN/inf is as bad as it gets: score it 0 (mIoU's floor) and
    flag it, so ASHA (which compares with ``<``, always False for NaN) can still stop it."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return 0.0, True
    return (v, False) if math.isfinite(v) else (0.0, True)


class ObjectiveReportCallback(TuneReportCallback):
    """``TuneReportCallback`` that adds the downstream objective at each epoch checkpoint.

    Only epoch-end reports (a checkpoint with ``prior.pt``) are forwarded: ASHA's rungs and
    the results table count epochs, not the trainer's intermediate step checkpoints.
    """

    def __init__(self, plugin: str, plugin_config: dict[str, Any], metric: str = "objective", probe: dict[str, Any] | None = None) -> None:
        super().__init__()  # raises outside a Tune session, and grabs the trial's result queue
        self.plugin_name = plugin
        self.plugin_config = plugin_config
        self.metric = metric
        self.probe = probe
        self._plugin = None
        self._prober = None
        self._epochs_seen = 0

    def score(self, prior: Path) -> float:
        """The objective of one epoch's export: the plugin's, or the dense probe's retrieval mIoU in %."""
        if self.probe is None:
            plugin, cfg = self._load()
            return plugin.objective(str(prior), cfg)
        from glocon.models.prior import load_prior_extractor
        from glocon.probe.run import EpochProber

        if self._prober is None:
            p = self.probe
            self._prober = EpochProber(p["train_shards"], p["val_shards"], p["limit"], p["input_size"], p["map"])
        return 100.0 * self._prober(load_prior_extractor(prior))

    def _load(self):
        if self._plugin is None:
            from glocon.plugins import load_plugin

            self._plugin = load_plugin(self.plugin_name)
        return self._plugin, self.plugin_config

    def after_report(self, run_context, metrics, checkpoint) -> None:  # noqa: D401 (Ray's signature)
        if checkpoint is None:
            return
        with checkpoint.as_directory() as ckpt_dir:
            prior = find_prior(ckpt_dir)
            if prior is None:
                return  # a mid-epoch checkpoint: not scored, not forwarded
            t0 = time.perf_counter()
            raw = self.score(prior)
            objective_s = time.perf_counter() - t0
        value, bad = sanitize_objective(raw)
        self._epochs_seen += 1
        out = {k: v for k, v in metrics[0].items() if isinstance(v, (int, float, str, bool)) or v is None}
        # The pretraining loop reports the 0-based index of the epoch that just ended; Tune (ASHA's
        # time_attr, the table, the plot) counts finished epochs.
        index = out.get(EPOCH_KEY)
        out["epoch_index"] = index
        out[EPOCH_KEY] = int(index) + 1 if isinstance(index, int) else self._epochs_seen
        out[self.metric] = value
        out["objective_nonfinite"] = bad
        out["objective_s"] = objective_s
        out["checkpoint_path"] = checkpoint.path
        self._training_actor_item_queue.put(out)


class PlacementGroupRecorder(WorkerGroupCallback):
    """Writes the id of the trial's worker-group placement group to ``<pg_dir>/<trial_id>.txt``.

    Why: when ASHA stops a trial, Tune kills the trial's driver, and with it the Train
    controller, before the controller can remove its placement group. A placement group made by
    a non-detached actor lives as long as the *job* (docs.ray.io, "Placement Group Lifetimes"),
    so its CPUs would stay reserved and the next trial's workers would never start. Ray Train's
    own safety net (the detached PlacementGroupCleaner) asks the state API whether the controller
    is alive; the state API needs the dashboard, which ``glocon.raycluster`` starts by default but
    a cluster may run without. So the sweep driver also removes the recorded group itself when
    Tune ends the trial (``glocon.tune.resources.ReleasePlacementGroups``).

    This is an internal Train V2 callback interface (``WorkerGroupCallback``); Train passes
    non-``UserCallback`` entries of ``RunConfig.callbacks`` to its controller as they are.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def after_worker_group_start(self, worker_group) -> None:
        pg = worker_group.get_worker_group_state().placement_group_handle.placement_group
        p = Path(self.path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with p.open("a") as fh:  # one line per worker group: a restarted group adds a line
            fh.write(pg.id.hex() + "\n")


def trial_pretrain_config(tune_config: dict[str, Any], setup: TrialSetup, trial_id: str):
    """The validated pretraining config of one trial (sampled params at their target paths,
    and a Train run named after the trial inside the sweep folder)."""
    data = trial_pretrain_dict(setup.base_pretrain, flat_params(tune_config, setup.space), setup.targets)
    t = setup.targets
    set_dotted(data, t.storage_path, setup.train_storage)
    set_dotted(data, t.name, f"trial-{trial_id}")
    set_dotted(data, t.num_workers, setup.workers_per_trial)
    if t.use_gpu:
        set_dotted(data, t.use_gpu, setup.use_gpu)
    if t.cpus_per_worker:
        set_dotted(data, t.cpus_per_worker, setup.cpus_per_worker)
    return validate_pretrain(data, f"sweep trial {trial_id}")


def _build_trainer(pcfg, callbacks: list):
    """The pretraining job's own trainer, with our callback appended to its RunConfig."""
    from glocon.train.pretrain import build_trainer

    if "callbacks" in inspect.signature(build_trainer).parameters:
        return build_trainer(pcfg, callbacks=callbacks)
    trainer = build_trainer(pcfg)
    # Train V2 reads ``run_config.callbacks`` in ``fit()`` (DataParallelTrainer._create_default_callbacks).
    trainer.run_config.callbacks = [*(trainer.run_config.callbacks or []), *callbacks]
    return trainer


def pretrain_trial(config: dict[str, Any], setup: TrialSetup) -> None:
    """The Tune function trainable: one pretraining run, scored at every epoch."""
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    pcfg = trial_pretrain_config(config, setup, trial_id)
    callback = ObjectiveReportCallback(setup.plugin, setup.plugin_config, setup.metric, setup.probe)
    recorder = PlacementGroupRecorder(str(Path(setup.pg_dir) / f"{trial_id}.txt"))
    trainer = _build_trainer(pcfg, [callback, recorder])
    trainer.fit()
