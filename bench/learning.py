"""Does pretraining learn? The recipe on the embedded data, judged by the dense probe against an
untrained prior of the same architecture (issue 11).

    python bench/learning.py [--config configs/pretrain-embedded.yaml] [--out runs/bench-learning] [--seeds 0 1 2] [key=value ...]

1. Writes the embedded train (400 images) and val (200 images) shards, unless they are there.
2. Pretrains with the recipe config under Ray Train (2 workers), on the train split only
   (inductive), timed: ``pretrain_minutes``.
3. Probes the export and its controls on the val split (memory / linear probe from the train
   split): the same architecture at random init (over the probe seeds, which also reseed the
   untrained weights), the run's starting weights (``init:``; from scratch the same as untrained), and Lite0's ImageNet features as a reference.

Headline figures are the last lines, as ``name = value``. ``probe_retrieval_gain`` is pretrained
over untrained retrieval mIoU (goal >= 1.5); ``pretrain_global_loss_vs_chance`` is the last 20
steps' L_global over ln(1 + K) (goal <= 0.6).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shards(out: Path, split: str, n: int) -> Path:
    from glocon.config import load_config
    from glocon.data.shards import ShardsConfig, make_shards

    folder = out / ("shards" if split == "train" else f"shards-{split}")
    cfg = load_config(ShardsConfig, REPO / "configs" / "shards-embedded.yaml", [f"out_dir={folder}", f"data.split={split}", f"data.embedded.n_images={n}"])
    make_shards(cfg)  # a rerun reuses finished shards
    return folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "pretrain-embedded.yaml"))
    ap.add_argument("--out", default=str(REPO / "runs" / "bench-learning"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the pretraining config")
    args = ap.parse_args(argv)

    from glocon.config import load_config
    from glocon.probe.config import ProbeConfig
    from glocon.probe.run import run_probe
    from glocon.train.config import PretrainConfig
    from glocon.train.pretrain import run_pretraining

    out = Path(args.out).resolve()
    train, val = shards(out, "train", 400), shards(out, "val", 200)
    pcfg = load_config(PretrainConfig, args.config, [f"data.shards={train}", f"storage_path={out / 'pretrain'}", "name=recipe", *args.overrides])
    t0 = time.perf_counter()
    result = run_pretraining(pcfg)
    minutes = (time.perf_counter() - t0) / 60
    summary = result.summary(pcfg)
    export = str(result.export_path)
    probe = ProbeConfig(
        priors={
            "pretrained": export,
            "untrained": f"random:{export}",
            "its init (from scratch: untrained)": f"init:{export}",
            "Lite0 ImageNet (reference)": "imagenet:efficientnet_lite0@16",
        },
        train_shards=str(train), val_shards=str(val), seeds=args.seeds, out=str(out / "probe"),
    )  # fmt: skip
    res = run_probe(probe)
    print((out / "probe" / "results.md").read_text())
    print(json.dumps({"summary": summary, "config": args.config, "overrides": args.overrides}, indent=1))
    p, u = res["priors"]["pretrained"], res["priors"]["untrained"]
    auroc = p.get("prior_map_auroc")
    print(f"probe_retrieval_miou_untrained = {100 * u['retrieval_miou']['mean']:.2f}")
    print(f"probe_retrieval_miou_untrained_std = {100 * u['retrieval_miou']['std']:.2f}")
    print(f"probe_retrieval_miou_pretrained = {100 * p['retrieval_miou']['mean']:.2f}")
    print(f"probe_retrieval_gain = {p['retrieval_miou']['mean'] / u['retrieval_miou']['mean']:.3f}")
    print(f"probe_linear_miou_untrained = {100 * u['linear_miou']['mean']:.2f}")
    print(f"probe_linear_miou_pretrained = {100 * p['linear_miou']['mean']:.2f}")
    print(f"probe_prior_map_auroc = {auroc['mean']:.4f}" if auroc else "probe_prior_map_auroc = nan")
    print(f"pretrain_global_loss_vs_chance = {summary.get('L_global_vs_chance', float('nan')):.3f}")
    print(f"pretrain_minutes = {minutes:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
