"""Results of an evaluation as markdown tables and a Fig. 5-style PNG grid.

The JSON written beside them is the source of truth; these are views of it.
"""

from __future__ import annotations

import io
import math
from typing import Any, Mapping, Sequence

import numpy as np


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _num(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def results_markdown(results: Mapping[str, Any]) -> str:
    """results: {"plugin", "benchmark", "folds": {fold: {shot: {...}}}, "mean": {shot: {...}}, ...}."""
    shots = [str(s) for s in results["shots"]]
    folds = results["folds"]
    names = results.get("class_names", {})
    lines = [
        f"# Few-shot results: `{results['plugin']}` on {results['benchmark']}",
        "",
        f"Episodes per fold and shot: {results['episodes_per_fold']}; seed {results['seed']}; "
        f"query resized to {results['image_size']} (PFENet's test resize), scored at the label's resolution, 255 ignored. "
        "mIoU = ΣI/ΣU per class over all episodes, then the mean over the fold's classes (Eq. 14); "
        "FB-IoU = mean of background and foreground ΣI/ΣU (Eq. 15). Values in %.",
        "",
        *(f"**Warning:** {w}" for w in results.get("warnings", [])),
        "## Per fold",
        "",
        "| fold | " + " | ".join(f"{s}-shot mIoU | {s}-shot FB-IoU" for s in shots) + " | classes |",
        "|---|" + "---|---|" * len(shots) + "---|",
    ]
    for fold, per_shot in folds.items():
        cells = []
        for s in shots:
            r = per_shot.get(s)
            cells += [_pct(r["miou"]) if r else "-", _pct(r["fb_iou"]) if r else "-"]
        n_cls = max((len(r["class_iou"]) for r in per_shot.values()), default=0)
        lines.append(f"| {fold} | " + " | ".join(cells) + f" | {n_cls} |")
    mean = results.get("mean", {})
    if len(folds) > 1:
        cells = []
        for s in shots:
            r = mean.get(s)
            cells += [_pct(r["miou"]) if r else "-", _pct(r["fb_iou"]) if r else "-"]
        lines.append("| **mean** | " + " | ".join(cells) + " | |")
    lines += ["", "## Per class (IoU %, episodes)", "", "| fold | class | " + " | ".join(f"{s}-shot IoU | {s}-shot episodes" for s in shots) + " |"]
    lines.append("|---|---|" + "---|---|" * len(shots))
    for fold, per_shot in folds.items():
        classes = sorted({int(c) for r in per_shot.values() for c in r["class_iou"]})
        for c in classes:
            cells = []
            for s in shots:
                r = per_shot.get(s)
                iou = r["class_iou"].get(str(c)) if r else None
                n = r["class_episodes"].get(str(c)) if r else None
                cells += [_pct(iou), "-" if n is None else str(n)]
            label = f"{c} {names.get(str(c), '')}".strip()
            lines.append(f"| {fold} | {label} | " + " | ".join(cells) + " |")
    region_rows = []
    for fold, per_shot in folds.items():
        for s in shots:
            r = per_shot.get(s) or {}
            for name, summary in (r.get("region_maps") or {}).items():
                region_rows.append((fold, s, name, summary))
    if region_rows:
        thresholds = list(region_rows[0][3]["recall"].keys())
        lines += [
            "",
            "## Region maps (Eq. 16 recall in %, and the mean map value on object vs background pixels)",
            "",
            "The paper (Sec. IV-C) reports its prior region map *low* on objects; the object / background means say what this prior does.",
            "",
            "| fold | shots | map | object mean | background mean | " + " | ".join(f"R@{t}" for t in thresholds) + " |",
            "|---|---|---|---|---|" + "---|" * len(thresholds),
        ]
        for fold, s, name, summary in region_rows:
            rec = " | ".join(_pct(summary["recall"][t]) for t in thresholds)
            lines.append(f"| {fold} | {s} | {name} | {_num(summary['object_mean'])} | {_num(summary['background_mean'])} | {rec} |")
    return "\n".join(lines) + "\n"


# -- Fig. 5 ------------------------------------------------------------------------------------
def _fit_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``mask`` resized (nearest) to ``shape`` when it is not already that size."""
    mask = np.asarray(mask)
    if mask.shape[:2] == tuple(shape):
        return mask
    rows = (np.arange(shape[0]) * mask.shape[0] // max(1, shape[0])).clip(0, mask.shape[0] - 1)
    cols = (np.arange(shape[1]) * mask.shape[1] // max(1, shape[1])).clip(0, mask.shape[1] - 1)
    resized: np.ndarray = mask[rows[:, None], cols[None, :]]
    return resized


def outline(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """Boolean (H, W): the pixels of ``mask`` within ``width`` pixels of its edge (4-neighbour erosion)."""
    inner = np.asarray(mask, dtype=bool)
    for _ in range(max(1, width)):
        padded = np.pad(inner, 1, constant_values=False)
        inner = inner & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    edge: np.ndarray = np.asarray(mask, dtype=bool) & ~inner
    return edge


def overlay(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 0, 0), alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8: ``mask == 1`` tinted with ``color`` and outlined in it (the convention of
    every mask column of Fig. 5); 0 and 255 (ignore) pixels left as they are."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    out = image[..., :3].astype(np.float32).copy()
    m = _fit_mask(mask, out.shape[:2]) == 1
    c = np.asarray(color, dtype=np.float32)
    out[m] = (1 - alpha) * out[m] + alpha * c
    out[outline(m, width=max(1, min(out.shape[:2]) // 100))] = c
    return out.clip(0, 255).astype(np.uint8)


def figure_caption(cls: int, iou: float) -> str:
    """A Fig. 5 row label on two lines: the class, then the episode's foreground IoU (``iou`` in [0, 1]) in %."""
    return f"class {cls}\nIoU {100 * iou:.1f}"


def figure_png(rows: Sequence[Mapping[str, Any]], title: str = "") -> bytes:
    """One row per episode, the columns of the paper's Fig. 5. Each row holds numpy arrays:
    support_image, support_label, query_image, ``maps`` ({name: (H, W) in [0, 1] or None}: the
    region maps the model declares, one column each, e.g. QGNet's prior and guided maps),
    prediction (H, W) {0, 1}, label (H, W) {0, 1, 255}, and a ``caption``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    map_names = list(dict.fromkeys(name for row in rows for name in (row.get("maps") or {})))
    columns = ["support + mask", "query", *(name.replace("_", " ") for name in map_names), "prediction", "ground truth"]
    n = max(1, len(rows))
    fig, axes = plt.subplots(n, len(columns), figsize=(2.2 * len(columns), 2.2 * n), squeeze=False)
    for i, row in enumerate(rows):
        q = row["query_image"]
        maps = row.get("maps") or {}
        panels = [
            overlay(row["support_image"], row["support_label"], (255, 0, 0)),
            q,
            *(maps.get(name) for name in map_names),
            overlay(q, row["prediction"], (0, 200, 255)),
            overlay(q, row["label"], (0, 255, 0)),
        ]
        for j, panel in enumerate(panels):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if panel is None:
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
            elif panel.ndim == 2:
                ax.imshow(panel, cmap="jet", vmin=0.0, vmax=1.0)
            else:
                ax.imshow(panel)
            if i == 0:
                ax.set_title(columns[j], fontsize=8)
        # a caption is one or more lines; an older results file may hold a literal backslash-n
        caption = str(row.get("caption", "")).replace("\\n", "\n")
        axes[i][0].set_ylabel(caption, fontsize=7, multialignment="center", linespacing=1.3)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()
