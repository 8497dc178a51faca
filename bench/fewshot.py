"""Few-shot evaluation speed, and what QGNet's prior branch costs.

    python bench/fewshot.py [--backbone resnet50] [--prior-backbone resnet50] [--size 241] [--episodes 20] [--repeats 5]

1. Evaluation episodes/s: the full eval path (decode, PFENet test resize, forward, back to the
   label grid, metrics) of QGNet on 1-shot episodes of the embedded data (generated, no download).
2. QGNet forward time with the prior branch (prior extractor F_p + Eq. 9-12) over the SAME model
   with the prior branch off (``use_prior_map=false``), both measured here on the same inputs,
   for the chosen pair and for the paper's resnet50 pair and the CPU resnet18 pair. Goal: <= 1.3.
3. Fit steps/s with the frozen-feature cache over without it (``glocon.fewshot.cache``), the same
   QGNet, the same episodes and the same fixed views: for the chosen ResNet pair at ``--size``
   (``fit_cache_speedup``, goal >= 5) and for the demo's CPU pair (F = EfficientNet-Lite0 undilated,
   F_p = resnet18) at ``--fit-size`` (``fit_cache_speedup_demo``). The cache saves the frozen
   backbones' cost; where the heads cost as much as the backbones (small CPU models), it saves less.

Weights are random (nothing is downloaded); speed does not depend on them. The last lines are
the headline figures.
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


def prior_ratio(backbone: str, prior_backbone: str, size: int, repeats: int, device: torch.device, tmp: Path) -> tuple[float, float]:
    """(forward seconds with the prior branch, without it), medians over interleaved repeats."""
    from glocon.models.prior import PriorArch, PriorExtractor, load_prior_extractor, save_export
    from glocon.plugins import load_plugin

    qgnet = load_plugin("qgnet")
    torch.manual_seed(0)
    prior_path = tmp / f"prior-{prior_backbone}.pt"
    save_export(PriorExtractor(PriorArch(backbone=prior_backbone), load_init_weights=False), prior_path)
    prior = load_prior_extractor(prior_path, device)
    common = {"backbone": backbone, "dilated": backbone != "resnet18"}
    torch.manual_seed(0)
    with_prior = qgnet.build_model(qgnet.make_config({**common, "use_prior_map": True}), prior).to(device).eval()
    torch.manual_seed(0)
    without = qgnet.build_model(qgnet.make_config({**common, "use_prior_map": False}), None).to(device).eval()
    g = torch.Generator().manual_seed(0)
    inputs = (
        torch.rand(1, 3, size, size, generator=g).to(device),
        torch.rand(1, 1, 3, size, size, generator=g).to(device),
        (torch.rand(1, 1, size, size, generator=g) > 0.5).float().to(device),
    )
    # interleave the two variants so machine load hits both alike
    t_with, t_without = [], []
    for _ in range(max(1, repeats)):
        t_with.append(_time_forward(with_prior, inputs, 1))
        t_without.append(_time_forward(without, inputs, 1))
    return statistics.median(t_with), statistics.median(t_without)


DEMO_PAIR = {"backbone": "efficientnet_lite0", "backbone_weights": "package:efficientnet_lite0", "dilated": False}, "resnet18"


def cache_and_datasets(size: int, steps: int, shots: int, tmp: Path, model_cfg: dict, prior_backbone: str, n_images: int = 60):
    """A QGNet, embedded images, a built cache and the two datasets over the same episodes."""
    from glocon.data.layouts import EmbeddedConfig, LayoutConfig, open_layout
    from glocon.fewshot.batches import RecordSource, TrainEpisodes
    from glocon.fewshot.cache import CachedTrainEpisodes, ViewSpec, build_cache
    from glocon.fewshot.episodes import TrainEpisodeSampler
    from glocon.models.prior import PriorArch, save_untrained_export, load_prior_extractor
    from glocon.plugins import load_plugin

    qgnet = load_plugin("qgnet")
    save_untrained_export(PriorArch(backbone=prior_backbone, output_stride=16), tmp / "prior.pt")
    cfg = qgnet.make_config(model_cfg)
    torch.manual_seed(0)
    model = qgnet.build_model(cfg, load_prior_extractor(tmp / "prior.pt"))
    records = open_layout(LayoutConfig(layout="embedded", min_class_pixels=512, embedded=EmbeddedConfig(n_images=n_images, size=size, cache_dir=str(tmp / "embedded"))))
    source = RecordSource(records, min_pixels=512)
    sampler = TrainEpisodeSampler(source.class_index, benchmark="embedded", fold=0, shots=shots, seed=321, base=list(range(6, 21)), novel=list(range(1, 6)))
    t0 = time.perf_counter()
    cache = build_cache(tmp / "cache", model, source, sampler.pool, ViewSpec(size, (0.9, 1.1), 2, 321), log=lambda _: None)
    build_s = time.perf_counter() - t0
    indices = list(range(4 * steps))
    return model, model.loss, TrainEpisodes(source, sampler, size, 321, indices, views=2), CachedTrainEpisodes(cache, sampler, 321, indices), build_s


def fit_speeds(size: int, steps: int, shots: int, tmp: Path, model_cfg: dict, prior_backbone: str, n_images: int = 60) -> tuple[float, float, float]:
    """(uncached steps/s, cached steps/s, cache build seconds) of QGNet training steps over fixed views."""
    tmp.mkdir(parents=True, exist_ok=True)
    model, loss_fn, plain, cached, build_s = cache_and_datasets(size, steps, shots, tmp, model_cfg, prior_backbone, n_images)
    from glocon.fewshot.config import FewShotConfig
    from glocon.fewshot.fit import make_optimizer, train_steps

    cfg = FewShotConfig.model_validate({"fit": {"steps": steps}})
    speeds = []
    for ds in (plain, cached):
        torch.manual_seed(0)
        opt, sched = make_optimizer(model, cfg, steps)
        t0 = time.perf_counter()
        train_steps(model, loss_fn, opt, sched, ds, batch_size=4, start_step=0, device=torch.device("cpu"))
        speeds.append(steps / (time.perf_counter() - t0))
    return speeds[0], speeds[1], build_s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="resnet50", help="QGNet's frozen feature extractor F (paper: resnet50, dilated)")
    ap.add_argument("--prior-backbone", default="resnet50", help="the prior extractor F_p's backbone (paper: resnet50)")
    ap.add_argument("--size", type=int, default=241, help="eval image size (paper: 473; CPU default smaller)")
    ap.add_argument("--episodes", type=int, default=20, help="1-shot episodes for the episodes/s figure")
    ap.add_argument("--repeats", type=int, default=5, help="timed forwards per variant (median)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    ap.add_argument("--fit-size", type=int, default=128, help="fit image size for the cache figure (the demo's)")
    ap.add_argument("--fit-steps", type=int, default=4, help="timed fit steps per variant (batch 4, 5-shot and 1-shot)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from glocon.data.layouts import EmbeddedConfig, LayoutConfig, open_layout
    from glocon.device import pick_device
    from glocon.fewshot.batches import RecordSource
    from glocon.fewshot.episodes import build_episodes
    from glocon.fewshot.runner import evaluate_episodes
    from glocon.plugins import load_plugin

    device = pick_device()
    s = args.size
    with tempfile.TemporaryDirectory(prefix="glocon-bench-fewshot-") as tmp:
        tmp = Path(tmp)
        print(f"device = {device}, torch threads = {torch.get_num_threads()}")
        ratios = {}
        for pair in {(args.backbone, args.prior_backbone), ("resnet50", "resnet50"), ("resnet18", "resnet18")}:
            fw, fo = prior_ratio(*pair, s, args.repeats, device, tmp)
            ratios[pair] = fw / fo
            print(f"qgnet forward (1-shot, {s}px, F={pair[0]}, F_p={pair[1]}): with prior {1000 * fw:.1f} ms, prior off {1000 * fo:.1f} ms, ratio {fw / fo:.3f}")
        fits = {}
        # the paper's kind of pair (F and F_p both ResNets, F dilated as PFENet) at the bench's size,
        # and the demo's CPU pair (Lite0 F undilated, resnet18 prior) at the demo's size
        paper = ({"backbone": args.backbone, "dilated": args.backbone != "resnet18"}, args.prior_backbone, s, 24)
        for name, (model_cfg, prior_bb, size, n_img) in (("paper", paper), ("demo", (*DEMO_PAIR, args.fit_size, 60))):
            for shots in (1, 5):
                plain, cached, build_s = fit_speeds(size, args.fit_steps, shots, tmp / f"fit-{name}", model_cfg, prior_bb, n_img)
                fits[(name, shots)] = cached / plain
                print(f"fit {name} pair (F {model_cfg['backbone']}, F_p {prior_bb}), {shots}-shot, {size}px, batch 4: "
                      f"{plain:.3f} steps/s uncached, {cached:.3f} cached ({cached / plain:.1f}x), cache built in {build_s:.0f} s")
        qgnet = load_plugin("qgnet")
        prior_path = tmp / f"prior-{args.prior_backbone}.pt"
        from glocon.models.prior import load_prior_extractor

        with_prior = qgnet.build_model(qgnet.make_config({"backbone": args.backbone, "dilated": args.backbone != "resnet18"}), load_prior_extractor(prior_path, device)).to(device).eval()

        records = open_layout(LayoutConfig(layout="embedded", min_class_pixels=512, embedded=EmbeddedConfig(n_images=60, size=128, cache_dir=str(Path(tmp) / "embedded"))))
        source = RecordSource(records, min_pixels=512)
        classes = sorted(source.class_index)
        es = build_episodes(source.class_index, benchmark="embedded", fold=0, mode="test", shots=1, n_episodes=args.episodes, seed=321, base=[], novel=classes)
        t0 = time.perf_counter()
        results, _ = evaluate_episodes(with_prior, source, es, image_size=s, batch_size=1, device=device)
        dt = time.perf_counter() - t0
        print(f"eval: {results['episodes']} 1-shot episodes in {dt:.2f} s (embedded data, {s}px, decode + resize + forward + scoring)")
        print(f"fewshot_episodes_per_s = {results['episodes'] / dt:.3f}")
        print(f"qgnet_prior_forward_ratio = {ratios[(args.backbone, args.prior_backbone)]:.3f}")
        print(f"qgnet_prior_forward_ratio_resnet50 = {ratios[('resnet50', 'resnet50')]:.3f}")
        print(f"qgnet_prior_forward_ratio_resnet18 = {ratios[('resnet18', 'resnet18')]:.3f}")
        print(f"fit_cache_speedup_demo_1shot = {fits[('demo', 1)]:.2f}")
        print(f"fit_cache_speedup_demo = {fits[('demo', 5)]:.2f}")
        print(f"fit_cache_speedup_1shot = {fits[('paper', 1)]:.2f}")
        print(f"fit_cache_speedup = {fits[('paper', 5)]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
