"""Few-shot evaluation speed, and what QGNet's prior branch costs.

    python bench/fewshot.py [--backbone resnet50] [--prior-backbone resnet50] [--size 241] [--episodes 20] [--repeats 5]

1. Evaluation episodes/s: the full eval path (decode, PFENet test resize, forward, back to the
   label grid, metrics) of QGNet on 1-shot episodes of the embedded data (generated, no download).
2. QGNet forward time with the prior branch (prior extractor F_p + Eq. 9-12) over the SAME model
   with the prior branch off (``use_prior_map=false``), both measured here on the same inputs.
   Goal: <= 1.3.

Weights are random (nothing is downloaded); speed does not depend on them. The last two lines
are the headline figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def _time_forward(model, inputs, repeats: int) -> float:
    """Median seconds of one forward pass (after one warm-up)."""
    times = []
    with torch.inference_mode():
        model(*inputs)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(*inputs)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="resnet50", help="QGNet's frozen feature extractor F (paper: resnet50, dilated)")
    ap.add_argument("--prior-backbone", default="resnet50", help="the prior extractor F_p's backbone (paper: resnet50)")
    ap.add_argument("--size", type=int, default=241, help="eval image size (paper: 473; CPU default smaller)")
    ap.add_argument("--episodes", type=int, default=20, help="1-shot episodes for the episodes/s figure")
    ap.add_argument("--repeats", type=int, default=5, help="timed forwards per variant (median)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from glocon.data.layouts import EmbeddedConfig, LayoutConfig, open_layout
    from glocon.device import pick_device
    from glocon.fewshot.batches import RecordSource
    from glocon.fewshot.episodes import build_episodes
    from glocon.fewshot.runner import evaluate_episodes
    from glocon.models.prior import PriorArch, PriorExtractor, save_export
    from glocon.plugins import load_plugin

    device = pick_device()
    qgnet = load_plugin("qgnet")
    dilated = args.backbone != "resnet18"
    with tempfile.TemporaryDirectory(prefix="glocon-bench-fewshot-") as tmp:
        torch.manual_seed(0)
        prior_path = Path(tmp) / "prior.pt"
        save_export(PriorExtractor(PriorArch(backbone=args.prior_backbone), load_init_weights=False), prior_path)
        from glocon.models.prior import load_prior_extractor

        prior = load_prior_extractor(prior_path, device)
        common = {"backbone": args.backbone, "dilated": dilated}
        torch.manual_seed(0)
        with_prior = qgnet.build_model(qgnet.make_config({**common, "use_prior_map": True}), prior).to(device).eval()
        torch.manual_seed(0)
        without = qgnet.build_model(qgnet.make_config({**common, "use_prior_map": False}), None).to(device).eval()

        g = torch.Generator().manual_seed(0)
        s = args.size
        inputs = (
            torch.rand(1, 3, s, s, generator=g).to(device),
            torch.rand(1, 1, 3, s, s, generator=g).to(device),
            (torch.rand(1, 1, s, s, generator=g) > 0.5).float().to(device),
        )
        # interleave the two variants so machine load hits both alike
        t_with, t_without = [], []
        for _ in range(max(1, args.repeats)):
            t_with.append(_time_forward(with_prior, inputs, 1))
            t_without.append(_time_forward(without, inputs, 1))
        fw, fo = statistics.median(t_with), statistics.median(t_without)
        print(f"device = {device}, torch threads = {torch.get_num_threads()}")
        print(f"qgnet forward (1-shot, {s}px, F={args.backbone} dilated={dilated}, F_p={args.prior_backbone}): with prior {1000 * fw:.1f} ms, prior off {1000 * fo:.1f} ms")

        records = open_layout(LayoutConfig(layout="embedded", min_class_pixels=512, embedded=EmbeddedConfig(n_images=60, size=128, cache_dir=str(Path(tmp) / "embedded"))))
        source = RecordSource(records, min_pixels=512)
        classes = sorted(source.class_index)
        es = build_episodes(source.class_index, benchmark="embedded", fold=0, mode="test", shots=1, n_episodes=args.episodes, seed=321, base=[], novel=classes)
        t0 = time.perf_counter()
        results, _ = evaluate_episodes(with_prior, source, es, image_size=s, batch_size=1, device=device)
        dt = time.perf_counter() - t0
        print(f"eval: {results['episodes']} 1-shot episodes in {dt:.2f} s (embedded data, {s}px, decode + resize + forward + scoring)")
        print(f"fewshot_episodes_per_s = {results['episodes'] / dt:.3f}")
        print(f"qgnet_prior_forward_ratio = {fw / fo:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
