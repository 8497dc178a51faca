"""Loss curves from a pretraining run's ``metrics.jsonl`` (one JSON object per step)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from glocon.io import atomic_write_bytes

CURVES = ("loss", "L_global", "L_local")  # metric names the pretraining loop pushes (Eq. 7, 1, 6)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    rows = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line of a killed run is not a reason to lose the plot
    return rows


def plot_loss_curves(rows: list[dict], out: str | os.PathLike, title: str = "pretraining losses") -> Path:
    """Plot every key of ``CURVES`` present in ``rows`` against ``step``; write a PNG atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    drawn = 0
    for key in CURVES:
        pts = [(r["step"], r[key]) for r in rows if key in r and "step" in r and r[key] is not None]
        if pts:
            xs, ys = zip(*sorted(pts))
            ax.plot(xs, ys, label=key)
            drawn += 1
    ax.set_xlabel("step")
    ax.set_ylabel("InfoNCE")
    ax.set_title(title)
    if drawn:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no metrics recorded", ha="center", va="center", transform=ax.transAxes)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(out, buf.getvalue())


def plot_fit_curves(curve: list[dict], out: str | os.PathLike, title: str, best_step: int | None = None) -> Path:
    """A few-shot fit's learning curve: the training loss (left axis) and base-train / base-val
    mIoU (right axis) against steps, the kept (best base-val) step marked; a PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=100)
    steps = [r["step"] for r in curve]
    if any("loss_mean" in r for r in curve):
        ax.plot(steps, [r.get("loss_mean") for r in curve], color="0.4", label="loss (mean since last eval)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    for key, label, colour in (("base_train_miou", "base-train mIoU", "tab:orange"), ("base_val_miou", "base-val mIoU (held out)", "tab:blue")):
        pts = [(r["step"], 100 * r[key]) for r in curve if r.get(key) is not None]
        if pts:
            ax2.plot(*zip(*pts), marker="o", ms=3, color=colour, label=label)
    ax2.set_ylabel("mIoU (%)")
    if best_step is not None:
        ax2.axvline(best_step, color="tab:green", ls="--", lw=1, label=f"kept: step {best_step}")
    handles = [h for a in (ax, ax2) for h in a.get_legend_handles_labels()[0]]
    ax2.legend(handles, [h.get_label() for h in handles], loc="center right", fontsize=8)
    ax.set_title(title)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(out, buf.getvalue())
