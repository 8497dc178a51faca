"""Pretraining step speed and memory, with ratios against baselines measured in this process.

    python bench/pretrain.py [--backbone resnet18] [--size 96] [--batch 16] [--repeats 5]

One process, no Ray (the step's own cost): real photos from ../shared/data/coco128, MoCo v2
views with their SLIC maps, resnet18 by default on CPU. Measures
- the step time with L_global + L_local vs L_global only, at the same batch (the local loss's
  overhead: patch sampling, pooling, a second queue);
- images/s of the whole step including making the two views, and peak RSS;
- achieved FLOP/s of a step (FLOPs counted by torch.utils.flop_counter) over the FLOP/s of a
  large float32 GEMM timed here (the machine's practical peak for this process).
Headline figures are the last four lines.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from glocon.data.superpixels import SlicConfig, slic_labels
from glocon.models.prior import PriorArch, PriorExtractor
from glocon.train.momentum import momentum_twin, update_momentum
from glocon.train.queues import KeyQueue
from glocon.train.step import forward_losses
from glocon.train.views import TwoViews, collate_pairs

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "coco128" / "images" / "train2017"


def load_photos(n: int, side: int) -> list[tuple[np.ndarray, np.ndarray]]:
    if not PHOTOS.is_dir():
        sys.exit(f"real photos not found at {PHOTOS} (expected ../shared/data/coco128 beside the repo)")
    out = []
    for path in sorted(PHOTOS.glob("*.jpg"))[:n]:
        img = Image.open(path).convert("RGB")
        img.thumbnail((side, side))
        image = np.asarray(img).copy()
        out.append((image, slic_labels(image, SlicConfig(n_segments=48))))
    return out


def gemm_flops_per_s(n: int = 1024, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


class Trainer:
    def __init__(self, args, w_local: float) -> None:
        torch.manual_seed(0)
        self.model = PriorExtractor(PriorArch(backbone=args.backbone))
        self.twin = momentum_twin(self.model)
        self.qg, self.ql = KeyQueue(args.queue, 128, 1), KeyQueue(args.queue, 128, 2)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.03 * args.batch / 256, momentum=0.9, weight_decay=1e-4)
        self.w_local = w_local
        self.args = args

    def step(self, batch: dict) -> float:
        update_momentum(self.model, self.twin, 0.999)
        parts = forward_losses(
            self.model, self.twin, batch, self.qg, self.ql, tau=0.2, w_global=1.0, w_local=self.w_local,
            max_patches=self.args.patches, min_patch_area=1.0, bn="local",
        )  # fmt: skip
        self.opt.zero_grad(set_to_none=True)
        parts.total.backward()
        self.opt.step()
        self.qg.enqueue(parts.keys_global)
        if self.w_local:
            self.ql.enqueue(parts.keys_local)
        return float(parts.total.detach())


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--queue", type=int, default=4096)
    p.add_argument("--patches", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    print(f"backbone={args.backbone} view={args.size}px batch={args.batch} queue={args.queue} P={args.patches} threads={torch.get_num_threads()}")

    photos = load_photos(args.batch, side=int(args.size * 1.5))
    views = TwoViews(args.size)
    make_batch = lambda: collate_pairs([views(img, lab) for img, lab in photos])  # noqa: E731
    batch = make_batch()
    both, global_only = Trainer(args, 1.0), Trainer(args, 0.0)
    both.step(batch), global_only.step(batch)  # warm up

    t_both, t_global, t_views = [], [], []
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits both alike
        t_global.append(timed(lambda: global_only.step(batch)))
        t_both.append(timed(lambda: both.step(batch)))
        t_views.append(timed(make_batch))
    step_both, step_global, view_time = statistics.median(t_both), statistics.median(t_global), statistics.median(t_views)

    with FlopCounterMode(display=False) as counter:
        both.step(batch)
    flops = counter.get_total_flops()
    peak = gemm_flops_per_s()
    achieved = flops / step_both
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"step global only      = {step_global * 1e3:.1f} ms (median of {args.repeats})")
    print(f"step global + local   = {step_both * 1e3:.1f} ms")
    print(f"two views for a batch = {view_time * 1e3:.1f} ms")
    print(f"compute-only images/s = {args.batch / step_both:.2f}")
    print(f"step FLOPs            = {flops / 1e9:.2f} GFLOP; achieved {achieved / 1e9:.2f} GFLOP/s; GEMM peak {peak / 1e9:.2f} GFLOP/s")
    print(f"local_global_step_ratio = {step_both / step_global:.3f}")
    print(f"pretrain_images_per_s = {args.batch / (step_both + view_time):.2f}")
    print(f"pretrain_peak_rss_mb = {rss_mb:.0f}")
    print(f"flops_fraction_of_gemm_peak = {achieved / peak:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
