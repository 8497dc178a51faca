"""One live dashboard for every long job: rich on a TTY, plain log lines elsewhere.

Under ``ray job submit``, in CI or piped to a file, stdout is not a TTY and a live view would
only fill the log with escape codes, so the same calls print one line every
``log_every_s`` seconds (and always the last one).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


class Dashboard:
    """Progress + metrics. ``advance``/``update`` are cheap; rendering is rate-limited."""

    def __init__(
        self,
        title: str,
        total: float | None = None,
        unit: str = "items",
        *,
        stream: TextIO | None = None,
        plain: bool | None = None,
        log_every_s: float = 5.0,
    ) -> None:
        self.title = title
        self.total = total
        self.unit = unit
        self.stream = stream or sys.stdout
        self.plain = (not self.stream.isatty()) if plain is None else plain
        self.log_every_s = log_every_s
        self.completed = 0.0
        self.metrics: dict[str, Any] = {}
        self._t0 = time.monotonic()
        self._last_log = 0.0
        self._live: Live | None = None
        self._progress: Progress | None = None
        self._task = None

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> "Dashboard":
        self._t0 = time.monotonic()
        if not self.plain:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
            )
            self._task = self._progress.add_task(self.title, total=self.total, rate="")
            console = Console(file=self.stream)
            self._live = Live(self._render(), console=console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        else:
            self._print(f"[{self.title}] start" + (f": {int(self.total)} {self.unit}" if self.total else ""))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(*exc)
            self._live = None
        else:
            self._log_line(final=True)

    # -- updates ---------------------------------------------------------------------------
    def advance(self, n: float = 1, **metrics: Any) -> None:
        self.update(completed=self.completed + n, **metrics)

    def update(self, completed: float | None = None, total: float | None = None, **metrics: Any) -> None:
        if completed is not None:
            self.completed = completed
        if total is not None:
            self.total = total
        self.metrics.update({k: v for k, v in metrics.items() if v is not None})
        if self._live is not None and self._progress is not None:
            self._progress.update(self._task, completed=self.completed, total=self.total, rate=self._rate_text())
            self._live.update(self._render())
        else:
            now = time.monotonic()
            if now - self._last_log >= self.log_every_s:
                self._log_line()

    def log(self, message: str) -> None:
        """A one-off line (e.g. 'checkpoint saved'), shown above the live view or as a log line."""
        if self._live is not None:
            self._live.console.print(message)
        else:
            self._print(f"[{self.title}] {message}")

    # -- rendering -------------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._t0

    @property
    def rate(self) -> float:
        return self.completed / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        if not self.total or self.rate <= 0:
            return None
        return max(self.total - self.completed, 0) / self.rate

    def _rate_text(self) -> str:
        return f"{self.rate:.2f} {self.unit}/s"

    def _metrics_table(self) -> Table:
        table = Table(show_header=False, box=None, pad_edge=False)
        for key, value in self.metrics.items():
            table.add_row(f"[cyan]{key}", _fmt(value))
        return table

    def _render(self) -> Group:
        assert self._progress is not None
        return Group(self._progress, self._metrics_table())

    def status_line(self) -> str:
        done = f"{_fmt(self.completed)}" + (f"/{_fmt(self.total)}" if self.total else "")
        pct = f" ({100 * self.completed / self.total:.0f}%)" if self.total else ""
        parts = [f"[{self.title}] {done} {self.unit}{pct}", f"{self.rate:.2f} {self.unit}/s", f"eta {format_eta(self.eta_s)}"]
        if self.metrics:
            parts.append(" ".join(f"{k}={_fmt(v)}" for k, v in self.metrics.items()))
        return " | ".join(parts)

    def _log_line(self, final: bool = False) -> None:
        self._last_log = time.monotonic()
        self._print(self.status_line() + (" | done" if final else ""))

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


