"""Training curves for TensorBoard (and, when asked, MLflow): optional, never required.

``run_log(run_dir, kind)`` returns a ``RunLog`` that writes each metric dict a run pushes as
scalars under ``<run_dir>/tb/`` with ``torch.utils.tensorboard.SummaryWriter``; ``tensorboard
--logdir runs/`` then shows every run. Without the ``tensorboard`` package it is a no-op that says
once why. With a tracking URI (``GLOCON_MLFLOW_URI`` or ``mlflow_uri=``) and ``mlflow`` importable,
the same scalars also go to an MLflow run named after the run folder. Sweeps need none of this:
Ray Tune writes its own event files into every trial folder.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any, Literal, Mapping

Kind = Literal["pretrain", "fit"]
TB_DIR = "tb"
MLFLOW_ENV = "GLOCON_MLFLOW_URI"
FLUSH_SECS = 10  # SummaryWriter's default is 120 s: too stale for a live `tensorboard` view

# metric key -> TensorBoard tag, per kind of run (what rank 0 pushes each step)
TAGS: dict[str, dict[str, str]] = {
    "pretrain": {
        "loss": "loss/total", "L_global": "loss/L_global", "L_local": "loss/L_local", "lr": "train/lr",
        "images_per_s": "throughput/images_per_s", "queue_fill_global": "queue/fill_global",
        "queue_fill_local": "queue/fill_local", "patches_per_image": "patches/per_image",
    },
    "fit": {"loss": "loss/total", "lr": "train/lr", "s_per_step": "throughput/s_per_step"},
}
PROBE_TAG = "probe/retrieval_miou"
NOT_SCALARS = {"step", "total_steps", "epoch", "fold", "resumed_from_step", "patches", "event"}
_said: set[str] = set()


def _say_once(why: str) -> None:
    if why not in _said:
        _said.add(why)
        print(f"[tblog] {why}", file=sys.stderr, flush=True)


def scalars(m: Mapping[str, Any], kind: Kind) -> dict[str, float]:
    """The tagged scalars of one pushed metric dict: a step's values, or a probe's retrieval mIoU."""
    event = m.get("event")
    if event == "probe":
        return {PROBE_TAG: float(m["retrieval_miou"])}
    if event == "eval":  # a few-shot fit's base-val / base-train scores (glocon.fewshot.baseval)
        return {f"{k[: -len('_miou')]}/miou": float(v) for k, v in m.items() if k.endswith("_miou") and isinstance(v, (int, float))}
    if event is not None:
        return {}
    tags = TAGS[kind]
    out = {tag: float(m[key]) for key, tag in tags.items() if isinstance(m.get(key), (int, float))}
    if kind == "fit":  # a plugin's loss parts (e.g. QGNet's aux losses) under loss/
        out.update({f"loss/{k}": float(v) for k, v in m.items() if k not in tags and k not in NOT_SCALARS and isinstance(v, (int, float))})
    return {t: v for t, v in out.items() if math.isfinite(v)}


def _summary_writer() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # torch's module raises this without the tensorboard package
        _say_once(f"TensorBoard logging is off: {exc} (pip install tensorboard, or the 'explore' extra)")
        return None
    return SummaryWriter


class _MLflow:
    """An MLflow run for one run folder; used only with a URI and mlflow importable."""

    def __init__(self, uri: str, name: str) -> None:
        import mlflow

        self.mlflow = mlflow
        mlflow.set_tracking_uri(uri)
        self.run = mlflow.start_run(run_name=name)

    def log(self, values: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(values, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


class RunLog:
    """Scalars of one run. ``log(m)`` takes what the run pushes; ``flush``/``close`` as files do."""

    def __init__(self, run_dir: str | os.PathLike, kind: Kind, mlflow_uri: str | None = None) -> None:
        self.dir, self.kind = Path(run_dir) / TB_DIR, kind
        self._writer_cls = _summary_writer()
        self.writer = self._writer_cls(log_dir=str(self.dir), flush_secs=FLUSH_SECS) if self._writer_cls else None
        self.mlflow = self._open_mlflow(mlflow_uri if mlflow_uri is not None else os.environ.get(MLFLOW_ENV), Path(run_dir).name)

    @staticmethod
    def _open_mlflow(uri: str | None, name: str) -> _MLflow | None:
        if not uri:
            return None
        try:
            return _MLflow(uri, name)
        except ImportError:
            _say_once(f"MLflow logging is off: {MLFLOW_ENV} is set but mlflow is not installed (pip install mlflow)")
            return None

    def log(self, m: Mapping[str, Any]) -> None:
        if m.get("event") == "start" and int(m.get("resumed_from_step") or 0) > 0 and self.writer is not None:
            self._restart(int(m["resumed_from_step"]))
        values = scalars(m, self.kind)
        if not values:
            return
        step = int(m["step"])
        if self.writer is not None:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)
        if self.mlflow is not None:
            self.mlflow.log(values, step)

    def _restart(self, step: int) -> None:
        """Workers restarted from the checkpoint at ``step``: the steps after it that were logged
        before the restart are run again, so TensorBoard is told to drop them (purge_step)."""
        self.writer.close()
        self.writer = self._writer_cls(log_dir=str(self.dir), flush_secs=FLUSH_SECS, purge_step=step + 1)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.mlflow is not None:
            self.mlflow.close()


def run_log(run_dir: str | os.PathLike, kind: Kind, mlflow_uri: str | None = None) -> RunLog:
    return RunLog(run_dir, kind, mlflow_uri)
