"""A live table of a sweep's trials: state, params, objective, best so far, ETA.

``SweepDashboard`` is a Ray Tune ``Callback``: Tune calls it in the driver process on every
trial start, result, completion and error. On a TTY it redraws a rich table; elsewhere (CI,
``ray job submit``, a log file) it prints one plain line per event, which is what a log wants.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from ray.tune import Callback
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from glocon.dashboard import format_eta

if TYPE_CHECKING:  # annotations only
    from ray.tune.experiment import Trial

STATE_STYLE = {"PENDING": "dim", "RUNNING": "cyan", "TERMINATED": "green", "STOPPED": "yellow", "ERROR": "red"}


def _f(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


@dataclass
class TrialRow:
    trial_id: str
    params: dict[str, Any]
    state: str = "PENDING"
    epochs: int | None = None  # configured epochs of the trial
    epoch: int = 0
    objective: float | None = None
    best: float | None = None
    loss: float | None = None
    started: float | None = None
    epoch_times: list[float] = field(default_factory=list)
    last_t: float | None = None


class SweepDashboard(Callback):
    """Tune callback: keeps one row per trial and renders them."""

    def __init__(
        self,
        title: str,
        *,
        metric: str = "objective",
        loss_key: str = "loss",
        total_trials: int | None = None,
        default_epochs: int | None = None,
        param_keys: tuple[str, ...] = ("tau", "patch_method", "epochs", "weights"),
        stream: TextIO | None = None,
        plain: bool | None = None,
        concurrency: int = 1,
    ) -> None:
        self.title = title
        self.metric = metric
        self.loss_key = loss_key
        self.total_trials = total_trials
        self.default_epochs = default_epochs
        self.param_keys = param_keys
        self.stream = stream or sys.stdout
        self.plain = (not self.stream.isatty()) if plain is None else plain
        self.concurrency = max(1, concurrency)
        self.rows: dict[str, TrialRow] = {}
        self._t0 = time.monotonic()
        self._live: Live | None = None

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks into tuner.pkl; a stream or a live view cannot go there.
        state = self.__dict__.copy()
        state["stream"] = None
        state["_live"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.stream is None:
            self.stream = sys.stdout

    # -- lifecycle (the sweep opens/closes it around Tuner.fit) ---------------------------
    def __enter__(self) -> "SweepDashboard":
        self._t0 = time.monotonic()
        if not self.plain:
            self._live = Live(self.render(), console=Console(file=self.stream), refresh_per_second=2)
            self._live.__enter__()
        else:
            self._print(f"[{self.title}] start" + (f": {self.total_trials} trials" if self.total_trials else ""))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.update(self.render())
            self._live.__exit__(*exc)
            self._live = None
        else:
            self._print(f"[{self.title}] {self.summary()}")

    # -- Tune callback hooks ----------------------------------------------------------------
    def _row(self, trial: Trial) -> TrialRow:
        row = self.rows.get(trial.trial_id)
        if row is None:
            cfg = dict(getattr(trial, "config", {}) or {})
            params = {k: cfg[k] for k in self.param_keys if k in cfg}
            row = TrialRow(trial.trial_id, params, epochs=cfg.get("epochs", self.default_epochs))
            self.rows[trial.trial_id] = row
        return row

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        row = self._row(trial)
        row.state = "RUNNING"
        row.started = row.last_t = time.monotonic()
        self._event(f"start {trial.trial_id} {self._params(row)}")

    def on_trial_restore(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.on_trial_start(iteration, trials, trial)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any) -> None:
        row = self._row(trial)
        row.state = "RUNNING"
        now = time.monotonic()
        if row.last_t is not None:
            row.epoch_times.append(now - row.last_t)
        row.last_t = now
        row.epoch = int(result.get("epoch", row.epoch + 1))
        if self.metric in result:
            row.objective = float(result[self.metric])
            row.best = row.objective if row.best is None else max(row.best, row.objective)
        if self.loss_key in result:
            row.loss = float(result[self.loss_key])
        self._event(
            f"result {trial.trial_id} epoch {row.epoch}/{_f(row.epochs)} {self.metric}={_f(row.objective)} "
            f"{self.loss_key}={_f(row.loss)} best={_f(self.best)} eta {format_eta(self.eta_s())}"
        )

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        row = self._row(trial)
        # A trial that ends before its configured epochs was stopped by the scheduler (ASHA).
        row.state = "STOPPED" if row.epochs and row.epoch < row.epochs else "TERMINATED"
        self._event(f"{'stopped early' if row.state == 'STOPPED' else 'done'} {trial.trial_id} after {row.epoch} epoch(s)")

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._row(trial).state = "ERROR"
        self._event(f"error {trial.trial_id} (see its error.txt in the sweep folder)")

    # -- numbers ----------------------------------------------------------------------------
    @property
    def best(self) -> float | None:
        vals = [r.best for r in self.rows.values() if r.best is not None]
        return max(vals) if vals else None

    def eta_s(self) -> float | None:
        """Remaining epochs (running and pending trials) x mean epoch time / concurrency."""
        times = [t for r in self.rows.values() for t in r.epoch_times]
        if not times:
            return None
        per_epoch = sum(times) / len(times)
        remaining = 0
        for r in self.rows.values():
            if r.state in ("RUNNING", "PENDING"):
                remaining += max((r.epochs or self.default_epochs or r.epoch) - r.epoch, 0)
        if self.total_trials:
            remaining += max(self.total_trials - len(self.rows), 0) * (self.default_epochs or 1)
        return remaining * per_epoch / self.concurrency

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for r in self.rows.values():
            counts[r.state] = counts.get(r.state, 0) + 1
        states = " ".join(f"{k.lower()}={v}" for k, v in sorted(counts.items()))
        return f"{len(self.rows)} trials ({states}) best {self.metric}={_f(self.best)} elapsed {format_eta(time.monotonic() - self._t0)}"

    # -- rendering --------------------------------------------------------------------------
    def _params(self, row: TrialRow) -> str:
        return " ".join(f"{k}={_f(v)}" for k, v in row.params.items())

    def render(self) -> Group:
        table = Table(title=self.title, expand=False)
        table.add_column("trial")
        table.add_column("state")
        for k in self.param_keys:
            table.add_column(k)
        table.add_column("epoch", justify="right")
        table.add_column(self.metric, justify="right")
        table.add_column("best", justify="right")
        table.add_column(self.loss_key, justify="right")
        best = self.best
        for r in self.rows.values():
            obj = Text(_f(r.objective), style="bold green" if best is not None and r.best == best else "")
            table.add_row(
                r.trial_id,
                Text(r.state, style=STATE_STYLE.get(r.state, "")),
                *[_f(r.params.get(k)) for k in self.param_keys],
                f"{r.epoch}/{_f(r.epochs)}",
                obj,
                _f(r.best),
                _f(r.loss),
            )
        footer = Text(
            f"best so far {self.metric}={_f(best)} | eta {format_eta(self.eta_s())} | "
            f"elapsed {format_eta(time.monotonic() - self._t0)}"
            + (f" | {len(self.rows)}/{self.total_trials} trials seen" if self.total_trials else "")
        )
        return Group(table, footer)

    def _event(self, text: str) -> None:
        if self._live is not None:
            self._live.update(self.render())
        elif self.plain:
            self._print(f"[{self.title}] {text}")

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)
