"""Evaluation encodes each image once (glocon.fewshot.encoded), for the training-free prototype
too: the same scores as encoding every episode; a config that changes the features (another
layer) is never served another's; choices that change only the head share one encoding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fewshot_helpers import MemorySource, toy_items
from glocon.fewshot.choose import choose_on_base_val
from glocon.featstore import weights_digest as frozen_digest
from glocon.fewshot.runner import FewShotConfig, build, evaluate
from glocon.plugins import load_plugin


def _cfg(tmp_path: Path, out: str, encode_once: bool, **model) -> FewShotConfig:
    return FewShotConfig.model_validate(
        {
            "plugin": "proto", "image_size": 48, "seed": 3,
            "model": {"source": "backbone", "backbone": "resnet18", "layer": "layer3", **model},
            "data": {"folds": [0], "novel_classes": [4]}, "episodes_dir": str(tmp_path / "episodes"),
            "eval": {"episodes": 6, "seeds": 2, "shots": [1, 5], "batch_size": 4, "out_dir": str(tmp_path / out), "n_figure_episodes": 0,
                     "bootstrap": 0, "encode_once": encode_once},
            "objective": {"episodes": 4, "shots": 1},
        }
    )  # fmt: skip


@pytest.mark.parametrize("mode", ["threshold", "fg_bg"])
def test_proto_scores_the_same_encoding_once_or_every_episode(tmp_path, mode):
    proto = load_plugin("proto")
    source = MemorySource(toy_items(n_per_class=8, size=48), min_pixels=64)
    once = evaluate(proto, _cfg(tmp_path, "once", True, mode=mode), source=source)
    every = evaluate(proto, _cfg(tmp_path, "every", False, mode=mode), source=source)
    for k in ("1", "5"):
        a, b = once["folds"]["0"][k], every["folds"]["0"][k]
        assert a["episodes"] == b["episodes"] == 12
        assert a["miou"] == pytest.approx(b["miou"], abs=1e-6) and a["class_iou"] == pytest.approx(b["class_iou"], abs=1e-6)
    assert 0 < once["timing"]["encoded_images"] <= 16  # 8 novel-class images: queries and (image, class) supports


def test_the_digest_follows_what_the_features_depend_on_not_the_head(tmp_path):
    proto = load_plugin("proto")
    def digest(**m) -> str:
        torch.manual_seed(0)  # resnet18 without weights: the same random F every time
        return frozen_digest(build(proto, _cfg(tmp_path, "x", True, **m)))

    assert digest(threshold=0.3) == digest(threshold=0.7) == digest(mode="fg_bg")  # the head reads the features after
    assert digest(layer="layer3") != digest(layer="layer2")


def test_base_val_choices_share_one_encoding_and_keep_their_scores(tmp_path):
    proto = load_plugin("proto")
    source = MemorySource(toy_items(n_per_class=8, size=48), min_pixels=64)
    shared = choose_on_base_val(proto, _cfg(tmp_path, "x", True), source)
    alone = choose_on_base_val(proto, _cfg(tmp_path, "x", False), source)
    assert shared["chosen"] == alone["chosen"]
    assert [s for _, s in shared["scores"]] == pytest.approx([s for _, s in alone["scores"]], abs=1e-4)
