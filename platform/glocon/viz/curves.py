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
