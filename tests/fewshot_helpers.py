"""Small in-memory few-shot data and a tiny segmenter that follows the plugin interface.

Used by tests/test_episodes.py and tests/test_fewshot_job.py. The data source follows
``glocon.fewshot.episodes.EpisodeSource`` (``get(key) -> Sample``, ``class_index``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from glocon.config import GloconModel
from glocon.data.record import MIN_CLASS_PIXELS, class_pixels, classes_present
from glocon.data.schema import Sample


class MemorySource:
    """{key: (image (H, W, 3) uint8, mask (H, W) uint8)} as an episode source."""

    def __init__(self, items: dict[str, tuple[np.ndarray, np.ndarray]], min_pixels: int = MIN_CLASS_PIXELS) -> None:
        self.items = items
        self.gets = 0
        index: dict[int, list[str]] = {}
        for key, (_, mask) in sorted(items.items()):
            for c in classes_present(class_pixels(mask), min_pixels):
                index.setdefault(c, []).append(key)
        self.class_index = index

    def get(self, key: str) -> Sample:
        self.gets += 1
        image, mask = self.items[key]
        h, w = mask.shape
        zeros = np.zeros((h, w), np.int32)
        meta = {"key": key, "source": "memory", "orig_size": [h, w], "size": [h, w], "classes": {str(c): n for c, n in class_pixels(mask).items()}}
        return Sample(key=key, image=image, slic=zeros, fh=zeros, meta=meta, mask=mask)

    def image_classes(self, key: str) -> dict[int, int]:
        return class_pixels(self.items[key][1])


def toy_items(n_per_class: int = 6, classes: tuple[int, ...] = (1, 2, 3, 4), size: int = 64, seed: int = 0, extra_novel_sliver: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Images with one square object each; class c has its own colour, so it is learnable.

    With ``extra_novel_sliver``, image ``c1-000`` also holds a few pixels of class 4 (below the
    2x32x32 rule), which only a source that lists every class can see.
    """
    rng = np.random.default_rng(seed)
    colours = {c: rng.integers(40, 255, size=3) for c in classes}
    items = {}
    for c in classes:
        for i in range(n_per_class):
            img = (rng.random((size, size, 3)) * 60).astype(np.uint8)
            mask = np.zeros((size, size), np.uint8)
            s = int(rng.integers(size // 2, size - 4))
            y, x = rng.integers(0, size - s + 1, size=2)
            mask[y : y + s, x : x + s] = c
            img[mask == c] = colours[c]
            mask[:2, :] = 255  # an ignored border row, like VOC's
            items[f"c{c}-{i:03d}"] = (img, mask)
    if extra_novel_sliver:
        img, mask = items["c1-000"]
        mask = mask.copy()
        mask[-3:, -3:] = 4
        items["c1-000"] = (img, mask)
    return items


class TinyConfig(GloconModel):
    width: int = 8


class TinySegmenter(nn.Module):
    """A prototype-conditioned conv net: the segmenter interface at toy scale."""

    def __init__(self, cfg: TinyConfig) -> None:
        super().__init__()
        w = cfg.width
        self.encoder = nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1, stride=2))
        self.head = nn.Conv2d(2 * w + 1, 2, 1)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())

    def forward(self, query: torch.Tensor, support_images: torch.Tensor, support_masks: torch.Tensor) -> dict[str, Any]:
        b, k = support_images.shape[:2]
        fq = self.encoder(query)
        fs = self.encoder(support_images.flatten(0, 1))
        m = F.interpolate(support_masks.flatten(0, 1)[:, None], size=fs.shape[-2:], mode="area")
        proto = ((fs * m).sum((2, 3)) / (m.sum((2, 3)) + 1e-5)).view(b, k, -1).mean(1)
        sim = F.cosine_similarity(fq, proto[:, :, None, None], dim=1)[:, None]
        sim_n = (sim - sim.amin((2, 3), keepdim=True)) / (sim.amax((2, 3), keepdim=True) - sim.amin((2, 3), keepdim=True) + 1e-7)
        x = torch.cat([fq, proto[:, :, None, None].expand_as(fq), sim], 1)
        logits = F.interpolate(self.head(x), size=query.shape[-2:], mode="bilinear", align_corners=False)
        return {"logits": logits, "guided_region_map": sim_n}

    def loss(self, out: dict[str, Any], target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        loss = F.cross_entropy(out["logits"], target.long(), ignore_index=255)
        return loss, {"loss": float(loss.detach())}


class TinyPlugin:
    """Follows glocon.plugins.Plugin's surface (name, config_model, trainable, build_model)."""

    name = "tiny"
    config_model = TinyConfig
    trainable = True

    def make_config(self, data: Any = None, source: str | None = None) -> TinyConfig:
        return TinyConfig.model_validate(dict(data or {}))

    def build_model(self, cfg: TinyConfig, prior: Any = None) -> TinySegmenter:
        return TinySegmenter(cfg)
