"""A tiny Ray actor that workers push metrics to, so the driver's Dashboard moves between reports.

``ray.train.report`` only reaches the driver at checkpoints (every N steps); the actor gets a
small dict every step from rank 0 (fire-and-forget ``push.remote``), and the driver polls
``since(i)``. It holds no resources (num_cpus=0) and lives as long as the driver, so it survives
worker restarts. The same history is written to ``<storage>/<name>/metrics.jsonl``.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import ray


@ray.remote(num_cpus=0)
class MetricsActor:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def push(self, metrics: dict[str, Any]) -> None:
        self.items.append(dict(metrics, t=time.time()))

    def since(self, index: int) -> list[dict[str, Any]]:
        return self.items[index:]

    def count(self) -> int:
        return len(self.items)


class MetricsPoller:
    """Driver side: a thread that pulls new metrics from the actor and hands each to ``on_metrics``."""

    def __init__(self, actor: Any, on_metrics: Callable[[dict[str, Any]], None], every_s: float = 0.5) -> None:
        self.actor = actor
        self.on_metrics = on_metrics
        self.every_s = every_s
        self.history: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="glocon-metrics-poller", daemon=True)

    def poll(self) -> int:
        new = ray.get(self.actor.since.remote(len(self.history)))
        for m in new:
            self.history.append(m)
            self.on_metrics(m)
        return len(new)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # a poll that fails (driver shutting down) must not kill the run
                pass
            self._stop.wait(self.every_s)

    def __enter__(self) -> "MetricsPoller":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.poll()  # the last few
        except Exception:
            pass
