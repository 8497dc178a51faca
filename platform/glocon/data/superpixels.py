"""SLIC and Felzenszwalb superpixels (scikit-image), as label maps contiguous from 0.

The paper's patch generators (Sec. IV-A2, Alg. 1 and 2, Eq. 2-5) are exactly these two
algorithms; scikit-image implements both, so glocon only chooses their parameters.
"""

from __future__ import annotations

import numpy as np
from skimage.segmentation import felzenszwalb, slic

from glocon.config import GloconModel


class SlicConfig(GloconModel):
    n_segments: int = 64  # K cluster centres (Alg. 2); grid interval S = sqrt(N / K)
    compactness: float = 10.0  # m in Eq. 2
    sigma: float = 1.0
    max_num_iter: int = 10
    start_label: int = 0


class FHConfig(GloconModel):
    scale: float = 300.0  # larger scale -> larger components (Alg. 1 threshold k)
    sigma: float = 0.8
    min_size: int = 100


class SuperpixelConfig(GloconModel):
    slic: SlicConfig = SlicConfig()
    fh: FHConfig = FHConfig()


def relabel_contiguous(labels: np.ndarray) -> np.ndarray:
    """Any integer label map -> ids 0..n-1 in order of first appearance in sorted id order. (H, W) int32."""
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape).astype(np.int32)


def slic_labels(image: np.ndarray, cfg: SlicConfig | None = None) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) int32 SLIC labels, contiguous from 0."""
    cfg = cfg or SlicConfig()
    labels = slic(
        image,
        n_segments=cfg.n_segments,
        compactness=cfg.compactness,
        sigma=cfg.sigma,
        max_num_iter=cfg.max_num_iter,
        start_label=cfg.start_label,
        channel_axis=-1,
        enforce_connectivity=True,
    )
    return relabel_contiguous(labels)


def fh_labels(image: np.ndarray, cfg: FHConfig | None = None) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) int32 Felzenszwalb labels, contiguous from 0."""
    cfg = cfg or FHConfig()
    labels = felzenszwalb(image, scale=cfg.scale, sigma=cfg.sigma, min_size=cfg.min_size, channel_axis=-1)
    return relabel_contiguous(labels)


def superpixels(image: np.ndarray, cfg: SuperpixelConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 -> (slic, fh) label maps."""
    cfg = cfg or SuperpixelConfig()
    return slic_labels(image, cfg.slic), fh_labels(image, cfg.fh)
