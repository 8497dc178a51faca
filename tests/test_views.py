"""MoCo v2 views applied jointly to the image and its superpixel map."""

import numpy as np
import pytest
import torch
from PIL import Image

from glocon.data.superpixels import SlicConfig, slic_labels
from glocon.train.views import TwoViews, ViewConfig, blur_kernel_size, moco_v2_transform


def _photo(coco128, size=96):
    path = sorted((coco128 / "images" / "train2017").glob("*.jpg"))[0]
    img = Image.open(path).convert("RGB")
    img.thumbnail((size, size))
    return np.asarray(img)


@pytest.mark.realdata
def test_same_superpixel_id_covers_the_same_source_pixels_in_both_views(coco128):
    image = _photo(coco128)
    labels = slic_labels(image, SlicConfig(n_segments=24))
    h, w = labels.shape
    source_index = np.arange(h * w).reshape(h, w)  # rides along like the superpixel map
    views = TwoViews(48)
    torch.manual_seed(0)
    for _ in range(10):
        per_view = []
        for _view in range(2):
            img, lab, src = views.view(image, labels, source_index)
            assert img.shape == (3, 48, 48) and img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1
            # Every output pixel's id is the id of the source pixel it came from.
            assert torch.equal(lab, torch.as_tensor(labels.reshape(-1)[src.numpy()]))
            per_view.append((lab, src))
        (lab1, src1), (lab2, src2) = per_view
        for s in set(lab1.unique().tolist()) & set(lab2.unique().tolist()):
            covered1 = set(src1[lab1 == s].tolist())
            covered2 = set(src2[lab2 == s].tolist())
            region = set(np.flatnonzero(labels.reshape(-1) == s).tolist())
            assert covered1 <= region and covered2 <= region  # the same source region in both views


def test_photometric_ops_leave_the_map_alone_and_geometric_ops_move_it():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
    labels = (np.arange(40)[:, None] // 10 * 4 + np.arange(40)[None, :] // 10).astype(np.int32)  # 16 blocks
    only_colour = moco_v2_transform(40, ViewConfig(crop_scale=(1.0, 1.0), jitter_p=1.0, grayscale_p=1.0, blur_p=1.0, flip_p=0.0))
    from torchvision import tv_tensors

    img, lab = only_colour(tv_tensors.Image(torch.as_tensor(image).permute(2, 0, 1)), tv_tensors.Mask(torch.as_tensor(labels)))
    assert torch.equal(lab, torch.as_tensor(labels))  # full crop, no flip: the map is untouched
    assert not torch.allclose(img, torch.as_tensor(image).permute(2, 0, 1).float() / 255)  # the image was recoloured
    flip = moco_v2_transform(40, ViewConfig(crop_scale=(1.0, 1.0), jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, flip_p=1.0))
    _, lab = flip(tv_tensors.Image(torch.as_tensor(image).permute(2, 0, 1)), tv_tensors.Mask(torch.as_tensor(labels)))
    assert torch.equal(lab, torch.as_tensor(labels).flip(-1))


def test_views_follow_moco_v2_settings_and_two_views_differ():
    cfg = ViewConfig()
    assert cfg.crop_scale == (0.2, 1.0) and cfg.jitter == (0.4, 0.4, 0.4, 0.1) and cfg.jitter_p == 0.8
    assert cfg.grayscale_p == 0.2 and cfg.blur_sigma == (0.1, 2.0) and cfg.blur_p == 0.5
    assert blur_kernel_size(224) == 23 and blur_kernel_size(64) % 2 == 1
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (50, 60, 3), dtype=np.uint8)
    labels = rng.integers(0, 9, (50, 60)).astype(np.int32)
    torch.manual_seed(0)
    pair = TwoViews(32)(image, labels)
    assert pair.labels_q.dtype == torch.long and pair.labels_q.shape == (32, 32)
    assert not torch.equal(pair.image_q, pair.image_k)
