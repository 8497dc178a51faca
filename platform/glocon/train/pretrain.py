"""The pretraining job as a library: ``build_trainer(cfg) -> TorchTrainer`` and ``run_pretraining(cfg)``.

Resume
------
Ray 2.60 runs Train V2, whose trainers *raise* on ``resume_from_checkpoint``. V2 resumes by run
identity instead: a trainer built with the same ``RunConfig(storage_path, name)`` finds the run's
checkpoint-manager snapshot and ``ray.train.get_checkpoint()`` returns the latest checkpoint
(docs.ray.io, "Handling Failures and Node Preemption": restore a run by creating the trainer
again with the same storage_path and name). So rerunning the same command continues the run;
a dead worker is restarted from the same latest checkpoint by ``FailureConfig(max_failures)``.

Outputs under ``<storage_path>/<name>/``
----------------------------------------
- ``checkpoint-step<NNNNNNNN>/``: Ray checkpoints (every ``checkpoint.every_steps`` and at each
  epoch end); ``state.pt`` + ``rng-rank<r>.pt`` + ``metrics.json``, and ``prior.pt`` at epoch ends.
- ``epochs/epoch-<EEEE>/{prior.pt,metrics.json}``: one export + metrics per finished epoch
  (local storage; kept apart from Ray's ``num_to_keep`` retention).
- ``metrics.jsonl``: every step's metrics as pushed by rank 0 (the Dashboard's feed).
- ``prior.pt``: the final export (``glocon.models.prior.load_prior_extractor`` reads it).
- ``config.resolved.yaml``.

For the sweep helper
--------------------
- ``build_trainer(cfg, callbacks=[...], metrics_actor=None)``: extra ``ray.train.UserCallback``s
  get ``after_report(run_context, metrics, checkpoint)`` after every checkpoint report; an epoch
  end has ``metrics[0]["epoch_end"] is True`` and ``Path(checkpoint.path) / "prior.pt"`` is that
  epoch's export.
- ``epoch_records(storage_path, name)``: after (or during) a run, the finished epochs as
  ``EpochRecord(epoch, metrics, prior_path)``, read from ``epochs/`` (defined in
  ``glocon.train.epochs``, which the probe reads them with without importing this module).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glocon import tblog
from glocon.config import save_resolved
from glocon.dashboard import Dashboard
from glocon.io import atomic_write_text
from glocon.models.prior import PriorExtractor, save_export
from glocon.paths import resolve, resolve_all
from glocon.preflight import check_pretrain
from glocon.train.checkpoint import load_state
from glocon.train.config import PretrainConfig
from glocon.train.run import RunSpec, fit_with_feed
from glocon.train.run import build_trainer as build_run_trainer
from glocon.train.epochs import EpochRecord, epoch_records  # noqa: F401  (re-exported: this module's API for the sweep helper)

EXPORT_NAME = "prior.pt"
METRICS_LOG = "metrics.jsonl"


@dataclass
class PretrainResult:
    result: Any  # ray.train.Result
    export_path: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return Path(self.result.path)

    def summary(self, cfg: PretrainConfig, last: int = 20) -> dict[str, float]:
        return run_summary(self.history, cfg, last)


def run_summary(history: list[dict[str, Any]], cfg: PretrainConfig, last: int = 20) -> dict[str, float]:
    """The end of a run in numbers: the last ``last`` steps' mean losses, each against its chance
    level ln(1 + negatives) (the loss of features that tell nothing apart), and the mean number of
    superpixel pairs per view that reached L_local over the whole run."""
    steps = [m for m in history if m.get("event") is None and "L_global" in m]
    if not steps:
        return {}
    tail = steps[-last:]
    mean = lambda key: sum(m[key] for m in tail) / len(tail)  # noqa: E731
    out: dict[str, float] = {"steps": float(steps[-1]["step"]), "patches_per_image": sum(m.get("patches_per_image", 0.0) for m in steps) / len(steps)}
    for term, queue, fill in (("L_global", cfg.loss.queue_global, "queue_fill_global"), ("L_local", cfg.loss.queue_local, "queue_fill_local")):
        if (cfg.loss.w_global if term == "L_global" else cfg.loss.w_local) and fill in tail[-1]:
            negatives = queue if cfg.loss.queue_start == "random" else max(1, round(tail[-1][fill] * queue))
            chance = math.log(1 + negatives)
            out[term], out[f"{term}_chance"], out[f"{term}_vs_chance"] = mean(term), chance, mean(term) / chance
    return out


def resolved(cfg: PretrainConfig) -> PretrainConfig:
    """Every path absolute and outliving a Ray job (``glocon.paths.resolve``): Ray needs an absolute
    storage_path, workers must see the driver's paths, and under ``ray job submit`` a relative path
    resolves against ``$GLOCON_SUBMIT_DIR`` (or is refused), never inside Ray's temporary copy."""
    data = cfg.model_dump()
    data["storage_path"] = resolve(cfg.storage_path, "storage_path")
    data["data"]["shards"] = resolve(cfg.data.shards, "data.shards")
    data["data"]["extra_shards"] = resolve_all(cfg.data.extra_shards, "data.extra_shards")
    data["probe"]["train_shards"] = resolve(cfg.probe.train_shards, "probe.train_shards")
    data["probe"]["val_shards"] = resolve(cfg.probe.val_shards, "probe.val_shards")
    return PretrainConfig.model_validate(data)


def run_spec(cfg: PretrainConfig, callbacks: list | None = None) -> RunSpec:
    """The run's place in Ray Train (``glocon.train.run``), from a resolved config."""
    return RunSpec(
        name=cfg.name, storage_path=cfg.storage_path, num_workers=cfg.num_workers, cpus_per_worker=cfg.cpus_per_worker, use_gpu=cfg.use_gpu,
        num_to_keep=cfg.checkpoint.num_to_keep, max_failures=cfg.max_failures, callbacks=list(callbacks or []),
    )  # fmt: skip


def build_trainer(cfg: PretrainConfig, *, callbacks: list | None = None, metrics_actor: Any = None):
    """The TorchTrainer of a pretraining run (not started). Same (storage_path, name) = same run."""
    from glocon.train.loop import train_loop_per_worker

    cfg = resolved(cfg)
    return build_run_trainer(train_loop_per_worker, {"cfg": cfg.model_dump(mode="json"), "metrics_actor": metrics_actor}, run_spec(cfg, callbacks))


def export_from_checkpoint(checkpoint_dir: str | os.PathLike, out: str | os.PathLike, cfg: PretrainConfig) -> Path:
    """Rebuild the prior extractor from a checkpoint's state.pt and write the export plugins load."""
    state = load_state(checkpoint_dir)
    model = PriorExtractor(cfg.model, load_init_weights=False)
    model.load_state_dict(state["model"])
    save_export(model, out, extra={"step": int(state["step"]), "epoch": int(state["epoch"]), "run": cfg.name, "checkpoint": str(checkpoint_dir), "protocol": cfg.protocol})
    return Path(out)


class _Feed:
    """Turns pushed metrics into Dashboard updates and keeps metrics.jsonl current (atomically)."""

    def __init__(self, dash: Dashboard, log_path: Path) -> None:
        self.dash = dash
        self.log_path = log_path
        self.lines: list[str] = []
        if log_path.is_file():  # a resumed run keeps its history
            self.lines = log_path.read_text().splitlines()
        self.tb = tblog.run_log(log_path.parent, "pretrain")  # <run>/tb/ for TensorBoard (optional)

    def __call__(self, m: dict[str, Any]) -> None:
        self.lines.append(json.dumps(m, sort_keys=True))
        self.tb.log(m)
        event = m.get("event")
        if event == "start":
            self.dash.update(completed=m["step"], total=m["total_steps"])
            if m.get("resumed_from_step", -1) >= 0:
                self.dash.log(f"resumed from step {m['resumed_from_step']}")
        elif event == "probe":
            self.dash.update(probe_retrieval_miou=m["retrieval_miou"])
            self.dash.log(f"epoch {m['epoch'] + 1}: probe retrieval mIoU {100 * m['retrieval_miou']:.2f} ({m['seconds']:.0f} s)")
        elif event == "checkpoint":
            self.dash.update(last_checkpoint=m["checkpoint"])
            self.dash.log(f"checkpoint {m['checkpoint']} (epoch {m['epoch']}{', epoch end' if m['epoch_end'] else ''})")
        elif event is None:
            self.dash.update(
                completed=m["step"], total=m["total_steps"], epoch=m["epoch"], loss=m["loss"], L_global=m["L_global"],
                L_local=m["L_local"], lr=m["lr"], images_per_s=m["images_per_s"], patches_per_image=m.get("patches_per_image"),
                queue_fill=f"{m['queue_fill_global']:.2f}/{m['queue_fill_local']:.2f}",
            )  # fmt: skip
        if event is not None or len(self.lines) % 20 == 0:
            self.flush()

    def flush(self) -> None:
        atomic_write_text(self.log_path, "\n".join(self.lines) + ("\n" if self.lines else ""))
        self.tb.flush()


def run_pretraining(cfg: PretrainConfig, *, callbacks: list | None = None) -> PretrainResult:
    """Start (or resume: same storage_path + name) a run, show the Dashboard, write the final export."""
    from glocon.raycluster import init_ray
    from glocon.train.metrics_actor import MetricsActor

    cfg = resolved(cfg)
    check_pretrain(cfg)  # before Ray starts: a job that cannot succeed says so in one line
    init_ray(cfg.ray)
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, run_dir)
    actor = MetricsActor.remote()
    trainer = build_trainer(cfg, callbacks=callbacks, metrics_actor=actor)
    with Dashboard(f"pretrain {cfg.name}", total=None, unit="steps", log_every_s=cfg.log_every_s) as dash:
        feed = _Feed(dash, run_dir / METRICS_LOG)
        result, history = fit_with_feed(trainer, actor, feed)
        feed.flush()
        feed.tb.close()
        export = None
        if result.checkpoint is not None:
            with result.checkpoint.as_directory() as folder:
                export = export_from_checkpoint(folder, run_dir / EXPORT_NAME, cfg)
            dash.log(f"export written: {export}")
    return PretrainResult(result=result, export_path=export, history=history)
