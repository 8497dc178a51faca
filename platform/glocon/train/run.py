"""One skeleton for every Ray Train run in glocon: pretraining and the few-shot fit.

Driver side: a ``RunSpec`` (name, storage, workers, CPUs, GPU, checkpoints kept, failures
tolerated), one ``build_trainer`` and one ``fit_with_feed`` (the metrics actor's feed into the
caller's dashboard while the trainer runs). Worker side: one ``WorkerSession`` that owns what a
worker needs from Ray Train once: rank, world, device, the metrics push (rank 0), resume from
``ray.train.get_checkpoint()`` (falling back over a damaged newest checkpoint, with this rank's
RNG), checkpoint folder names, the checkpoint files and report, DDP, and the fault drill.

Resume is by run identity (Ray Train V2): a trainer built again with the same
``RunSpec(storage_path, name)`` finds the run's checkpoints (docs.ray.io, "Handling Failures and
Node Preemption").
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from glocon.io import atomic_write_json
from glocon.train.checkpoint import METRICS, STATE, CheckpointNames, load_resumable, load_tensors, rng_file, rng_state, save_tensors, set_rng_state
from glocon.train.faults import FaultSection, maybe_die


STAGING = ".staging-rank"  # <run>/.staging-rank<r>-*: a checkpoint being written by rank r


def staging_dir(run_dir: Path | None, rank: int) -> tempfile.TemporaryDirectory[str]:
    """Where rank ``rank`` writes a checkpoint before Ray Train takes it: inside the run's folder,
    so a worker killed mid-write leaves its half checkpoint there (cleared by ``clear_staging`` when
    the rank starts again), never in the machine's /tmp (130-170 MB each, found piling up there
    after kill drills). Remote storage: the system temp folder."""
    if run_dir is None:
        return tempfile.TemporaryDirectory(prefix="glocon-ckpt-")
    run_dir.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=f"{STAGING}{rank}-", dir=run_dir)


def clear_staging(run_dir: Path | None, rank: int) -> list[Path]:
    """Delete what an earlier attempt of rank ``rank`` left half-written; returns what was deleted.
    Only this rank's: another rank may be writing its own (no rank writes a checkpoint before every
    rank has started, the first step being a collective)."""
    if run_dir is None or not run_dir.is_dir():
        return []
    stale = sorted(run_dir.glob(f"{STAGING}{rank}-*"))
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


@dataclass(frozen=True)
class RunSpec:
    """What Ray Train needs to place, keep and restart a run; the same (storage_path, name) is the same run."""

    name: str
    storage_path: str  # an absolute folder or a URI
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    use_gpu: bool | None = None  # None: when CUDA is present
    num_to_keep: int | None = 2  # Ray's checkpoint retention
    max_failures: int = 0  # worker-group restarts from the last checkpoint
    callbacks: list[Any] = field(default_factory=list)  # ray.train.UserCallback

    @property
    def local_dir(self) -> Path | None:
        """The run's folder when storage is local (remote runs are never listed)."""
        return None if "://" in self.storage_path else Path(self.storage_path) / self.name


def build_trainer(loop: Callable[[dict[str, Any]], None], loop_config: dict[str, Any], spec: RunSpec) -> Any:
    """The TorchTrainer of a run (not started): ``loop(loop_config)`` on every worker."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from glocon.raycluster import train_logging

    use_gpu = torch.cuda.is_available() if spec.use_gpu is None else spec.use_gpu
    resources = {"CPU": spec.cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    return TorchTrainer(
        loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=spec.num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=spec.name,
            storage_path=spec.storage_path,
            failure_config=FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=spec.num_to_keep),
            callbacks=spec.callbacks or None,
            logging_config=train_logging(),  # type: ignore[call-arg]  # ray.train's RunConfig is Train V2's at run time; mypy reads ray.air's
        ),
    )


def fit_with_feed(trainer: Any, actor: Any, on_metrics: Callable[[dict[str, Any]], None]) -> tuple[Any, list[dict[str, Any]]]:
    """Run ``trainer`` while the workers' pushed metrics reach ``on_metrics``; (result, every metric pushed)."""
    import ray

    from glocon.train.metrics_actor import MetricsPoller

    with MetricsPoller(actor, on_metrics) as poller:
        result = trainer.fit()
    ray.kill(actor)
    return result, list(poller.history)


class WorkerSession:
    """A Ray Train worker's view of its run. Build it first thing in the worker function: it lists
    the run's checkpoint folders before this attempt writes any (``CheckpointNames``)."""

    def __init__(self, run_dir: Path | None, actor: Any = None, fault: FaultSection | None = None) -> None:
        import ray.train
        import ray.train.torch

        from glocon.raycluster import quiet_train_reports

        quiet_train_reports()
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self.run_dir, self.actor, self.fault = run_dir, actor, fault
        self.names = CheckpointNames(run_dir)
        clear_staging(run_dir, self.rank)

    def push(self, metrics: dict[str, Any]) -> None:
        """Rank 0's metrics to the driver's dashboard (fire and forget)."""
        if self.actor is not None and self.rank == 0:
            self.actor.push.remote(metrics)

    def resume(self, loader: Callable[[Path], dict[str, Any]]) -> tuple[dict[str, Any], Path] | None:
        """The latest checkpoint's state read by ``loader`` (a truncated newest one, after a kill or
        a full disk, falls back to the newest good one), with this rank's RNG restored; None on a fresh run."""
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as latest:
            state, folder = load_resumable(latest, self.run_dir, loader=loader)
            if (Path(folder) / rng_file(self.rank)).is_file():
                set_rng_state(load_tensors(Path(folder) / rng_file(self.rank)))
        return state, Path(folder)

    def ddp(self, model: torch.nn.Module, find_unused: bool) -> torch.nn.Module:
        """DDP over the workers (gloo on CPU, NCCL on GPU); the model itself on one worker."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, find_unused_parameters=find_unused)

    def checkpoint(
        self, step: int, metrics: dict[str, Any], state: Callable[[], dict[str, Any]], *, file_metrics: dict[str, Any] | None = None, extra: Callable[[Path], None] | None = None
    ) -> str:
        """Report ``metrics`` with a checkpoint: rank 0 writes ``state()`` as state.pt, metrics.json
        (``file_metrics`` or ``metrics``) and whatever ``extra(folder)`` adds; every rank its RNG.
        Returns the checkpoint's folder name."""
        import ray.train

        name = self.names(step)
        with staging_dir(self.run_dir, self.rank) as tmp:
            if self.rank == 0:
                save_tensors(Path(tmp) / STATE, state())
                atomic_write_json(Path(tmp) / METRICS, metrics if file_metrics is None else file_metrics)
                if extra is not None:
                    extra(Path(tmp))
            save_tensors(Path(tmp) / rng_file(self.rank), rng_state())
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp), checkpoint_dir_name=name)
        return name

    def maybe_die(self, step: int) -> None:
        """The fault drill (tests only): SIGKILL this worker at the configured step, once."""
        if self.fault is not None:
            maybe_die(self.fault, step, self.rank)
