"""Does pretraining learn? The recipe on the embedded data, judged by the dense probe against an
untrained prior of the same architecture (issue 11).

    python bench/learning.py [--init scratch|lite0] [--config ...] [--out runs/bench-learning] [--seeds 0 1 2] [key=value ...]

``--init scratch`` (default) pretrains resnet18 from random weights with
``configs/pretrain-embedded.yaml``; ``--init lite0`` continues from EfficientNet-Lite0's ImageNet
weights with ``configs/pretrain-embedded-lite0.yaml`` (issue 20), and the bar is its own start.

1. Writes the embedded train (400 images) and val (200 images) shards, unless they are there.
2. Pretrains with the recipe config under Ray Train (2 workers), on the train split only
   (inductive), timed: ``pretrain_minutes``.
3. Probes the export and its controls on the val split (memory / linear probe from the train
   split): the same architecture at random init (over the probe seeds, which also reseed the
   untrained weights), the run's starting weights (``init:``; from scratch the same as untrained), and Lite0's ImageNet features as a reference.

Headline figures are the last lines, as ``name = value``. From scratch: ``probe_retrieval_gain`` is
pretrained over untrained retrieval mIoU (goal >= 1.5). From Lite0: ``probe_retrieval_gain_vs_init``
(goal >= 1.10) and ``probe_linear_gain_vs_init`` (goal >= 1.0) are pretrained over its ImageNet
start. ``pretrain_global_loss_vs_chance`` is the last 20 steps' L_global over ln(1 + K) (goal <= 0.6).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"scratch": "pretrain-embedded.yaml", "lite0": "pretrain-embedded-lite0.yaml"}


def shards(out: Path, split: str, n: int) -> Path:
    from glocon.config import load_config
    from glocon.data.shardplan import ShardsConfig
    from glocon.data.shards import make_shards

    folder = out / ("shards" if split == "train" else f"shards-{split}")
    cfg = load_config(ShardsConfig, REPO / "configs" / "shards-embedded.yaml", [f"out_dir={folder}", f"data.split={split}", f"data.embedded.n_images={n}"])
    make_shards(cfg)  # a rerun reuses finished shards
    return folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--init", choices=sorted(CONFIGS), default="scratch", help="where pretraining starts (picks the default --config)")
    ap.add_argument("--config", default=None, help="default: configs/pretrain-embedded.yaml (scratch), configs/pretrain-embedded-lite0.yaml (lite0)")
    ap.add_argument("--out", default=None, help="default: runs/bench-learning (scratch), runs/bench-learning-lite0 (lite0)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the pretraining config")
    args = ap.parse_args(argv)

    from glocon.config import load_config
    from glocon.probe.config import ProbeConfig
    from glocon.probe.run import run_probe
    from glocon.train.config import PretrainConfig
    from glocon.train.pretrain import run_pretraining

    config = args.config or str(REPO / "configs" / CONFIGS[args.init])
    out = Path(args.out or REPO / "runs" / ("bench-learning" if args.init == "scratch" else f"bench-learning-{args.init}")).resolve()
    train, val = shards(out, "train", 400), shards(out, "val", 200)
    pcfg = load_config(PretrainConfig, config, [f"data.shards={train}", f"storage_path={out / 'pretrain'}", "name=recipe", *args.overrides])
    t0 = time.perf_counter()
    result = run_pretraining(pcfg)
    minutes = (time.perf_counter() - t0) / 60
    summary = result.summary(pcfg)
    export = str(result.export_path)
    priors = {"pretrained": export, "untrained": f"random:{export}"}
    if args.init == "scratch":
        priors |= {"its init (from scratch: untrained)": f"init:{export}", "Lite0 ImageNet (reference)": "imagenet:efficientnet_lite0@16"}
    else:
        priors |= {"its init (Lite0 ImageNet, no pretraining)": f"init:{export}"}
    probe = ProbeConfig(priors=priors, train_shards=str(train), val_shards=str(val), seeds=args.seeds, out=str(out / "probe"))
    res = run_probe(probe)
    print((out / "probe" / "results.md").read_text())
    print(json.dumps({"summary": summary, "config": config, "overrides": args.overrides}, indent=1))
    p, u = res["priors"]["pretrained"], res["priors"]["untrained"]
    auroc = p.get("prior_map_auroc")
    print(f"probe_retrieval_miou_untrained = {100 * u['retrieval_miou']['mean']:.2f}")
    print(f"probe_retrieval_miou_untrained_std = {100 * u['retrieval_miou']['std']:.2f}")
    if args.init != "scratch":
        i = res["priors"]["its init (Lite0 ImageNet, no pretraining)"]
        print(f"probe_retrieval_miou_init = {100 * i['retrieval_miou']['mean']:.2f}")
        print(f"probe_linear_miou_init = {100 * i['linear_miou']['mean']:.2f}")
    print(f"probe_retrieval_miou_pretrained = {100 * p['retrieval_miou']['mean']:.2f}")
    print(f"probe_linear_miou_pretrained = {100 * p['linear_miou']['mean']:.2f}")
    print(f"probe_prior_map_auroc = {auroc['mean']:.4f}" if auroc else "probe_prior_map_auroc = nan")
    if args.init == "scratch":
        print(f"probe_linear_miou_untrained = {100 * u['linear_miou']['mean']:.2f}")
        print(f"probe_retrieval_gain = {p['retrieval_miou']['mean'] / u['retrieval_miou']['mean']:.3f}")
    else:
        print(f"probe_retrieval_gain_vs_init = {p['retrieval_miou']['mean'] / i['retrieval_miou']['mean']:.3f}")
        print(f"probe_linear_gain_vs_init = {p['linear_miou']['mean'] / i['linear_miou']['mean']:.3f}")
    print(f"pretrain_global_loss_vs_chance = {summary.get('L_global_vs_chance', float('nan')):.3f}")
    print(f"pretrain_minutes = {minutes:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
