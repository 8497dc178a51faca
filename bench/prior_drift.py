"""Why is the prior region map low on objects? The paper's conjecture (Sec. IV-C), measured.

    python bench/prior_drift.py --prior runs/bench-learning-lite0/pretrain/recipe/prior.pt \
        --val runs/bench-learning-lite0/shards-val

The paper: the prior "learns the object features ... transferred to a new feature space, which is
dissimilar to the features generated from the bridge encoder", while the background "remain[s] in
a similar feature space", so the map is low on objects. A prior continued from F's own weights
(``bench/learning.py --init lite0``: F = Lite0 ImageNet, the prior starts as F) lets this be
measured directly, cell by cell, on held-out images:

- ``prior_drift_auroc``: AUROC, objects (any class but 0) against background, of each cell's drift
  1 - cos(init(x), pretrained(x)) at the same position. Over 0.5: pretraining moved the object
  cells' features further from where they started than the background's (the conjecture).
- ``prior_map_auroc_literal``: the prior region map of Eq. 9-12 between the init (F) and the
  pretrained prior, literally (equal widths, no alignment). Under 0.5: low on objects.
- ``drift_object`` / ``drift_background``: the mean drift on each.

No randomness enters (frozen exports, fixed images): one number each. Headline lines last.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
import torch.nn.functional as F


def cell_drift(init: np.ndarray, pretrained: np.ndarray) -> np.ndarray:
    """(N, C, h, w) twice -> (N, 1, h, w): 1 - cosine of the two features at each cell."""
    a, b = torch.from_numpy(init), torch.from_numpy(pretrained)
    return (1.0 - F.cosine_similarity(a, b, dim=1, eps=1e-7)).unsqueeze(1).numpy()


def pixel_scores(maps: np.ndarray, masks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each image's (1, h, w) map upsampled bilinearly to its mask; (scores, is_object) over labelled pixels."""
    from glocon.ops import IGNORE_INDEX

    scores, objects = [], []
    for m, mask in zip(maps, masks):
        up = F.interpolate(torch.from_numpy(m)[None], size=mask.shape, mode="bilinear", align_corners=False)[0, 0].numpy()
        keep = mask != IGNORE_INDEX
        scores.append(up[keep])
        objects.append(mask[keep] != 0)
    return np.concatenate(scores), np.concatenate(objects)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prior", required=True, help="a prior export pretrained from package weights (its init: is F)")
    ap.add_argument("--val", required=True, help="labelled held-out shards")
    ap.add_argument("--map", default="prior", help="the dense map compared (default: the prior's own map)")
    ap.add_argument("--input-size", type=int, default=160)
    args = ap.parse_args(argv)

    from glocon.featstore.store import StoreConfig, open_store
    from glocon.probe import features as pf
    from glocon.probe.metrics import auroc
    from glocon.probe.priormap import separability
    from glocon.probe.run import labelled_samples

    val = labelled_samples(args.val, None, "val")
    store = open_store(StoreConfig())
    init = pf.extract(pf.build_encoder(f"init:{args.prior}"), val, args.map, args.input_size, 16, store)
    pre = pf.extract(pf.build_encoder(args.prior), val, args.map, args.input_size, 16, store)
    s, obj = pixel_scores(cell_drift(init.features, pre.features), init.masks)
    literal = separability(init.features, pre.features, init.masks)
    print(f"{len(val)} val images, {init.features.shape[1]}-d map on a {init.grid[0]}x{init.grid[1]} grid, {len(s)} labelled pixels ({obj.mean():.1%} object)")
    print(f"drift_object = {s[obj].mean():.4f}")
    print(f"drift_background = {s[~obj].mean():.4f}")
    print(f"prior_drift_auroc = {auroc(s, obj):.4f}")
    print(f"prior_map_auroc_literal = {literal['auroc']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
