"""A sweep's results: one row per trial (status, objective per epoch, best epoch), the tables
(``results.csv``, ``results.md``, ``results.json``), the best trial as a ready-to-run pretraining
config and the objective-against-epoch plot."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glocon.config import to_yaml
from glocon.io import atomic_open, atomic_write_json, atomic_write_text
from glocon.tune.objective import objective_name
from glocon.tune.space import SweepConfig, flat_params, get_dotted, set_dotted, trial_pretrain_dict, validate_pretrain


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
