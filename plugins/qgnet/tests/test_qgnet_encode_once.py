"""Evaluation encodes each image once (glocon.fewshot.encoded): the same scores as encoding every
episode, at a fraction of the encoder passes; another frozen model is never served stale features."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from fewshot_helpers import MemorySource, toy_items  # noqa: E402

from glocon.fewshot.encoded import EncodedEval  # noqa: E402
from glocon.featstore import weights_digest as frozen_digest  # noqa: E402
from glocon.fewshot.runner import FewShotConfig, build, evaluate  # noqa: E402
from glocon.plugins import load_plugin  # noqa: E402


def _cfg(tmp_path: Path, prior: Path, out: str, encode_once: bool) -> FewShotConfig:
    return FewShotConfig.model_validate(
        {
            "plugin": "qgnet", "prior": str(prior), "image_size": 64, "seed": 5,
            "model": {"backbone": "resnet18", "dilated": False, "reduce_dim": 16, "prior_conv_dim": 16, "guided_map_layer": "layer3"},
            "data": {"folds": [0], "novel_classes": [4]}, "episodes_dir": str(tmp_path / "episodes"),
            "eval": {"episodes": 6, "seeds": 2, "shots": [1, 5], "batch_size": 4, "out_dir": str(tmp_path / out), "n_figure_episodes": 0,
                     "bootstrap": 0, "allow_untrained": True, "encode_once": encode_once},
        }
    )  # fmt: skip


def test_encoding_once_gives_the_scores_of_encoding_every_episode(prior_export, tmp_path):
    qgnet = load_plugin("qgnet")
    source = MemorySource(toy_items(n_per_class=8, size=48), min_pixels=64)
    once = evaluate(qgnet, _cfg(tmp_path, prior_export, "once", True), source=source)
    every = evaluate(qgnet, _cfg(tmp_path, prior_export, "every", False), source=source)
    for k in ("1", "5"):
        a, b = once["folds"]["0"][k], every["folds"]["0"][k]
        assert a["episodes"] == b["episodes"] == 12
        assert a["miou"] == pytest.approx(b["miou"], abs=1e-6) and a["fb_iou"] == pytest.approx(b["fb_iou"], abs=1e-6)
        for name in ("prior", "guided"):
            assert a["region_maps"][name]["object_mean"] == pytest.approx(b["region_maps"][name]["object_mean"], abs=1e-5)
    episodes_images = 2 * 6 * (1 + 1) + 2 * 6 * (1 + 5)  # seeds x episodes x (query + supports), 1- and 5-shot
    assert every["timing"]["encoded_images"] is None
    # 8 images of the novel class: at most 8 queries and 8 (image, class) supports, for both shots and seeds
    assert 0 < once["timing"]["encoded_images"] <= 16 < episodes_images


def test_a_model_with_other_frozen_weights_is_not_served_stale_features(prior_export, tmp_path):
    qgnet = load_plugin("qgnet")
    cfg = _cfg(tmp_path, prior_export, "x", True)
    torch.manual_seed(0)
    a = build(qgnet, cfg)
    torch.manual_seed(0)
    b = build(qgnet, cfg)
    with torch.no_grad():
        for p in b.trainable_parameters():  # another head, the same frozen F and prior
            p.add_(torch.randn_like(p))
    b.train()
    b(torch.rand(2, 3, 64, 64), torch.rand(2, 1, 3, 64, 64), torch.ones(2, 1, 64, 64))  # moves the head's BatchNorm statistics
    assert frozen_digest(a) == frozen_digest(b)  # the head is not part of what encodes
    with torch.no_grad():
        next(b.prior.parameters()).add_(1.0)  # a different prior: its features differ
    assert frozen_digest(a) != frozen_digest(b)
    store = EncodedEval()
    store.bind(a)
    store.queries["k"] = {"layer3": torch.zeros(1)}
    store.bind(a)
    assert "k" in store.queries
    store.bind(b)
    assert store.queries == {} and store.supports == {}


def test_rows_that_differ_only_in_the_prior_read_fs_features_from_the_store(prior_export, tmp_path):
    """F's layers and the prior's map are stored apart (``QGNet.store_parts``): a second row with
    another prior or none encodes only its prior; every output equals the plain encoders'."""
    from glocon.featstore import FeatureStore, StoredEncoders

    qgnet = load_plugin("qgnet")
    store = FeatureStore(tmp_path / "store")
    images, masks = torch.rand(3, 3, 64, 64), (torch.rand(3, 64, 64) > 0.5).float()
    rows = {}
    for name, prior, overrides in (("learned", prior_export, {}), ("untrained", prior_export, {"seed": 9}), ("off", prior_export, {"use_prior_map": False})):
        cfg = _cfg(tmp_path, prior, name, True)
        cfg = cfg.model_copy(update={"model": {**cfg.model, **{k: v for k, v in overrides.items() if k != "seed"}}})
        torch.manual_seed(0)
        model = build(qgnet, cfg)
        if "seed" in overrides:  # another prior: the same architecture, other weights
            torch.manual_seed(overrides["seed"])
            with torch.no_grad():
                for p in model.prior.parameters():
                    p.copy_(torch.randn_like(p) * 0.05)
        model.eval()
        before = (store.stats.hits, store.stats.misses)
        enc = StoredEncoders(store, model)
        q, s = enc("encode_query", images), enc("encode_support", images, masks)
        rows[name] = (store.stats.hits - before[0], store.stats.misses - before[1])
        plain_q, plain_s = model.encode_query(images), model.encode_support(images, masks)
        assert set(q) == set(plain_q) and set(s) == set(plain_s)
        for k in plain_q:
            assert torch.allclose(q[k], plain_q[k], atol=1e-5), k
        for k in plain_s:
            assert torch.allclose(s[k], plain_s[k], atol=1e-5), k
    assert rows["learned"] == (0, 9)  # 3 images x (F query, prior, F support)
    assert rows["untrained"] == (6, 3)  # F's query and support parts read; only the new prior's map encoded
    # no prior map: F's support part is read; its query part asks for no layer4 (only the prior map
    # reads layer4 here), another output, so it is encoded
    assert rows["off"] == (3, 3)
