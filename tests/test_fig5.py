"""Fig. 5 grid (glocon.fewshot.report.figure_png): the support column shows the support mask, and
row labels are two real lines. Tiny synthetic rows, no Ray, no model."""

from __future__ import annotations

import inspect
import io

import numpy as np
import pytest

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")

from glocon.fewshot import evaluate, report  # noqa: E402

SUPPORT_RGB = (20, 40, 230)  # a colour nothing else in the figure uses, to find the support panel by


def _row(support_label: np.ndarray, caption: str = "class 3\nIoU 42.0") -> dict:
    h = w = 32
    query = np.full((h, w, 3), 128, np.uint8)
    pred = np.zeros((h, w), np.uint8)
    pred[4:12, 4:12] = 1
    label = np.zeros((h, w), np.uint8)
    label[6:14, 6:14] = 1
    label[0, :] = 255
    return {
        "support_image": np.broadcast_to(np.asarray(SUPPORT_RGB, np.uint8), (h, w, 3)).copy(),
        "support_label": support_label,
        "query_image": query,
        "maps": {},
        "prediction": pred,
        "label": label,
        "caption": caption,
    }


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def _bbox(m: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(m)
    return int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())


def test_support_panel_shows_the_support_mask() -> None:
    empty = np.zeros((32, 32), np.uint8)
    square = empty.copy()
    square[8:24, 8:24] = 1
    square[0:2, :] = 255  # ignore pixels are not drawn as object
    plain = _decode(report.figure_png([_row(empty)]))
    masked = _decode(report.figure_png([_row(square)]))
    assert plain.shape == masked.shape

    # the support panel: the pixels of the plain render that carry the support image's colour
    panel = np.abs(plain - np.asarray(SUPPORT_RGB)).sum(axis=2) <= 12
    assert panel.sum() > 1000
    py0, py1, px0, px1 = _bbox(panel)
    assert px1 < plain.shape[1] * 0.3, "the support panel is the first of four columns"

    changed = np.abs(masked - plain).sum(axis=2) > 0
    assert changed.any(), "the support mask is not drawn"
    y0, y1, x0, x1 = _bbox(changed)
    assert py0 <= y0 and y1 <= py1 and px0 <= x0 and x1 <= px1, "only the support panel may change"

    # inside the mask (the panel's middle): tinted red, clearly unlike the plain support colour
    ph, pw = py1 - py0 + 1, px1 - px0 + 1
    cy, cx = py0 + ph // 2, px0 + pw // 2
    inner = (slice(cy - ph // 8, cy + ph // 8), slice(cx - pw // 8, cx + pw // 8))
    assert np.abs(masked[inner] - plain[inner]).sum(axis=2).min() > 60
    assert (masked[inner][..., 0] > plain[inner][..., 0] + 60).all(), "the tint is red"

    # well outside the mask (the panel's bottom-left corner band) the support image is untouched
    far = (slice(py1 - ph // 10, py1 - 1), slice(px0 + 1, px0 + pw // 10))
    assert np.abs(masked[far] - plain[far]).max() <= 3
    # the ignore rows (255) at the top are not tinted either
    top = (slice(py0 + 1, py0 + max(2, ph // 40)), slice(px0 + pw // 2 - 2, px0 + pw // 2 + 2))
    assert np.abs(masked[top] - plain[top]).max() <= 3


def test_overlay_tints_and_outlines_object_only() -> None:
    img = np.full((40, 40, 3), 100, np.uint8)
    mask = np.zeros((40, 40), np.uint8)
    mask[10:30, 10:30] = 1
    mask[0:5, 0:5] = 255
    out = report.overlay(img, mask, (255, 0, 0))
    assert (out[mask == 0] == 100).all() and (out[mask == 255] == 100).all()
    assert (out[20, 20] == [177, 50, 50]).all()  # half-way to red
    assert (out[10, 20] == [255, 0, 0]).all() and (out[29, 15] == [255, 0, 0]).all()  # the outline
    # a label at another resolution than its image is resized, not an error
    assert report.overlay(img, mask[::2, ::2]).shape == img.shape


def test_caption_is_two_real_lines() -> None:
    caption = report.figure_caption(7, 0.4567)
    assert caption == "class 7\nIoU 45.7"
    assert "\\" not in caption and caption.count("\n") == 1
    # evaluate_episodes builds its captions with this helper, not an f-string of its own
    assert evaluate.figure_caption is report.figure_caption
    src = inspect.getsource(evaluate.evaluate_episodes)
    assert "figure_caption(" in src and "\\\\n" not in src


def test_literal_backslash_n_caption_renders_as_two_lines() -> None:
    mask = np.zeros((32, 32), np.uint8)
    real = report.figure_png([_row(mask, "class 3\nIoU 42.0")])
    literal = report.figure_png([_row(mask, "class 3\\nIoU 42.0")])  # an older results file
    one_line = report.figure_png([_row(mask, "class 3 IoU 42.0")])
    assert _decode(real).shape == _decode(literal).shape
    assert np.array_equal(_decode(real), _decode(literal))
    assert not np.array_equal(_decode(real), _decode(one_line))
