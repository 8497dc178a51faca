"""What the explorer tests serve: real COCO128 photo shards (two sets), banks over them from two
random-init priors, a QGNet and a proto evaluation on one shared episode file, and a probe-like
results folder. Built once per test session (a marker says the folder is complete)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from glocon.data.record import class_pixels, classes_present
from glocon.data.schema import Sample
from glocon.data.superpixels import fh_labels, slic_labels

from bank_shards import FH, SLIC, load_pair, masked_images
from shard_writer import write_sample_shards

MIN_PIXELS = 100  # at ~96 px, COCO's 2 x 32 x 32 rule would leave almost no class


def photo_samples(coco128: Path, pairs: list[tuple[Path, Path]], size: int) -> list[Sample]:
    out = []
    for image_path, mask_path in pairs:
        image, mask = load_pair(image_path, mask_path, size)
        meta = {"key": f"coco128/{image_path.stem}", "source": str(image_path), "orig_size": list(Image.open(image_path).size[::-1]),
                "size": list(image.shape[:2]), "classes": {str(k): v for k, v in class_pixels(mask).items()}, "layout": "coco"}
        out.append(Sample(key=meta["key"], image=image, slic=slic_labels(image, SLIC), fh=fh_labels(image, FH), meta=meta, mask=mask))
    return out


def write_set(folder: Path, samples: list[Sample], prefix: str) -> Path:
    classes: dict[int, list[str]] = {}
    for s in samples:
        for c in classes_present(class_pixels(s.mask), MIN_PIXELS):
            classes.setdefault(c, []).append(s.key)
    write_sample_shards(folder, samples, per_shard=4, prefix=prefix, classes=classes)
    return folder


def export_prior(path: Path, seed: int) -> Path:
    from glocon.models.prior import PriorArch, PriorExtractor, save_export

    torch.manual_seed(seed)
    save_export(PriorExtractor(PriorArch(backbone="resnet18")), path)
    return path


def build_bank(root: Path, name: str, prior: Path, shards: Path, names: Path) -> Path:
    from glocon.bank.build import build_bank as build
    from glocon.bank.config import BankConfig

    build(BankConfig(prior=str(prior), shards=str(shards), out=str(root / name), workers=0, input_size=96, class_names=str(names),
                     query={"k": 6}))
    return root / name


def evaluate(root: Path, name: str, plugin: str, model: dict, prior: Path, shards: Path, novel: list[int]) -> Path:
    from glocon.fewshot.runner import FewShotConfig, evaluate as run_eval
    from glocon.plugins import load_plugin

    cfg = FewShotConfig.model_validate({
        "plugin": plugin, "model": model, "prior": str(prior), "image_size": 64, "device": "cpu",
        "data": {"shards": str(shards), "benchmark": "coco", "folds": [0], "novel_classes": novel},
        "episodes_dir": str(root / "episodes"),
        "eval": {"episodes": 4, "shots": [1], "out_dir": str(root / "eval" / name), "n_figure_episodes": 2, "allow_untrained": True},
    })  # fmt: skip
    run_eval(load_plugin(plugin), cfg)
    return root / "eval" / name


def probe_like(folder: Path) -> Path:
    """Files as the probe job writes them: a markdown table, a CSV, a plot, a sub-folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.md").write_text("# Dense probe\n\n| prior | retrieval mIoU |\n|---|---|\n| pretrained | 12.5 |\n| random <b>init</b> | 3.1 |\n")
    (folder / "results.csv").write_text("prior,miou\npretrained,12.5\nrandom,3.1\n")
    (folder / "results.json").write_text(json.dumps({"priors": {"pretrained": 0.125}}))
    Image.fromarray((np.arange(64 * 96 * 3) % 251).astype(np.uint8).reshape(64, 96, 3)).save(folder / "probe-vs-epoch.png")
    (folder / "trials").mkdir(exist_ok=True)
    (folder / "trials" / "notes.txt").write_text("trial notes\n")
    return folder


def build_explore_data(coco128: Path, root: Path) -> dict[str, Path]:
    """Everything, once: reused when ``root`` already holds a finished build."""
    paths = {
        "train": root / "shards-train", "other": root / "shards-other", "bank_a": root / "banks" / "a", "bank_b": root / "banks" / "b",
        "bank_other": root / "banks" / "other", "qgnet": root / "eval" / "qgnet", "proto": root / "eval" / "proto",
        "probe": root / "probe", "inputs": root / "inputs", "episodes": root / "episodes", "names": coco128 / "semantic_segmentation" / "config.yaml",
    }  # fmt: skip
    if (root / "done").is_file():
        return paths
    pairs = masked_images(coco128, 14)
    train = photo_samples(coco128, pairs[:10], 96)
    write_set(paths["train"], train, "train")
    write_set(paths["other"], photo_samples(coco128, pairs[10:], 96), "other")
    inputs = paths["inputs"]
    inputs.mkdir(parents=True, exist_ok=True)
    prior_a, prior_b = export_prior(inputs / "prior-a.pt", 0), export_prior(inputs / "prior-b.pt", 1)
    build_bank(root / "banks", "a", prior_a, paths["train"], paths["names"])
    build_bank(root / "banks", "b", prior_b, paths["train"], paths["names"])
    build_bank(root / "banks", "other", prior_a, paths["other"], paths["names"])
    counts = {}
    for s in train:
        for c in classes_present(class_pixels(s.mask), MIN_PIXELS):
            counts[c] = counts.get(c, 0) + 1
    novel = sorted(c for c, n in counts.items() if n >= 2)[:3]
    evaluate(root, "qgnet", "qgnet", {"backbone": "resnet18", "dilated": False, "reduce_dim": 32, "prior_conv_dim": 32}, prior_a, paths["train"], novel)
    evaluate(root, "proto", "proto", {}, prior_a, paths["train"], novel)
    probe_like(paths["probe"])
    (root / "done").write_text("ok\n")
    return paths


def explore_config(paths: dict[str, Path], **extra) -> "ExploreConfig":  # noqa: F821
    from glocon.explore.config import ExploreConfig

    return ExploreConfig(
        shards={"train": str(paths["train"]), "other": str(paths["other"])},
        banks={"a": str(paths["bank_a"]), "b": str(paths["bank_b"]), "other": str(paths["bank_other"])},
        evals={"qgnet": str(paths["qgnet"]), "proto": str(paths["proto"])},
        results={"probe": str(paths["probe"])},
        inputs=[str(paths["inputs"]), str(paths["episodes"])],
        **extra,
    )
