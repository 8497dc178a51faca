"""QGNet end to end on tiny tensors: shapes, the prior export, frozen parts, K-shot, ablations, loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from glocon.errors import ConfigError
from glocon.models.prior import PriorArch, PriorExtractor, load_prior_extractor, with_output_stride

from glocon_qgnet.model import QGNet, QGNetConfig, build_qgnet, segmentation_loss
from glocon_qgnet.region_maps import guided_region_map, prior_region_map

SIZE = 65  # dilated resnet18 -> 9x9 bridge features; the resnet18 prior -> 3x3


def tiny_cfg(**kw) -> QGNetConfig:
    return QGNetConfig(backbone="resnet18", reduce_dim=32, prior_conv_dim=32, **kw)


def episode(b: int = 2, k: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    query = torch.rand(b, 3, SIZE, SIZE, generator=g)
    supports = torch.rand(b, k, 3, SIZE, SIZE, generator=g)
    masks = torch.zeros(b, k, SIZE, SIZE)
    masks[..., 10:50, 15:45] = 1.0
    return query, supports, masks


@pytest.fixture(scope="module")
def model(prior_export) -> QGNet:
    torch.manual_seed(0)
    return build_qgnet(tiny_cfg(prior_path=str(prior_export))).eval()


@pytest.mark.parametrize("k", [1, 5])
def test_one_shot_and_five_shot_outputs_have_the_contract_shapes(model, k):
    with torch.no_grad():
        out = model(*episode(b=2, k=k))
    assert out["logits"].shape == (2, 2, SIZE, SIZE)
    assert out["prior_region_map"].shape == (2, 1, 9, 9)
    assert out["guided_region_map"].shape == (2, 1, 9, 9)
    assert [tuple(a.shape[:2]) for a in out["aux_logits"]] == [(2, 2)] * 4
    for key in ("prior_region_map", "guided_region_map"):
        assert out[key].min() >= 0 and out[key].max() < 1  # Eq. (12)


def test_resnet18_feature_extractor_is_dilated_to_output_stride_8(model):
    feats = model._extract(torch.rand(1, 3, SIZE, SIZE), need_layer4=True)
    assert feats["layer2"].shape[-2:] == feats["layer3"].shape[-2:] == feats["layer4"].shape[-2:] == (9, 9)


def test_a_pretraining_export_loads_into_qgnet_and_drives_the_prior_region_map(model, prior_export):
    exported = load_prior_extractor(prior_export)
    for name, tensor in exported.state_dict().items():
        assert torch.equal(model.prior.state_dict()[name], tensor), name
    query, supports, masks = episode()
    with torch.no_grad():
        out = model(query, supports, masks)
        # the prior branch is Eq. 9-12 on the release's learned 3x3 convs over layer4 and P_q = F_p(I_q)
        x = model.down_bridge_prior(model._extract(query, need_layer4=True)["layer4"])
        # P_q = F_p(I_q) read at the configured stride (the release dilates the prior: stride 8)
        p = model.down_prior(with_output_stride(exported, model.cfg.prior_output_stride).prior_features(query))
        assert torch.allclose(out["prior_region_map"], prior_region_map(x, p), atol=1e-6)
        # another export changes the prior map and nothing on the support side
        torch.manual_seed(999)
        other = PriorExtractor(PriorArch(backbone="resnet18")).state_dict()
        saved = {k: v.clone() for k, v in model.prior.state_dict().items()}
        model.prior.load_state_dict(other)
        try:
            out2 = model(query, supports, masks)
        finally:
            model.prior.load_state_dict(saved)
    assert not torch.allclose(out["prior_region_map"], out2["prior_region_map"], atol=1e-4)
    assert torch.equal(out["guided_region_map"], out2["guided_region_map"])


def test_gradients_reach_the_learned_layers_but_not_the_frozen_backbone_or_prior(prior_export):
    torch.manual_seed(0)
    m = build_qgnet(tiny_cfg(prior_path=str(prior_export))).train()
    query, supports, masks = episode()
    target = (torch.rand(2, SIZE, SIZE) > 0.5).long()
    loss, _ = m.loss(m(query, supports, masks), target)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in m.backbone.parameters())
    assert all(p.grad is None and not p.requires_grad for p in m.prior.parameters())
    trainable = {id(p) for p in m.trainable_parameters()}
    assert trainable.isdisjoint(id(p) for p in (*m.backbone.parameters(), *m.prior.parameters()))
    assert trainable == {id(p) for p in m.parameters() if p.requires_grad}
    for name in ("down_query", "down_supp", "down_bridge_prior", "down_prior", "fem"):
        grads = [p.grad for p in getattr(m, name).parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads), name


def test_train_mode_keeps_frozen_batchnorm_statistics(prior_export):
    torch.manual_seed(0)
    m = build_qgnet(tiny_cfg(prior_path=str(prior_export))).train()
    assert not m.backbone.training and not m.prior.training and m.fem.training
    before = {k: v.clone() for k, v in m.state_dict().items() if "running_mean" in k}
    m(*episode())
    after = m.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_k_shot_guided_map_is_the_mean_of_the_single_shot_maps(model):
    query, supports, masks = episode(b=1, k=2, seed=3)
    masks[:, 1] = 0
    masks[:, 1, 30:60, 5:30] = 1
    with torch.no_grad():
        two = model(query, supports, masks)
        one = [model(query, supports[:, [i]], masks[:, [i]]) for i in range(2)]
        # and by hand from the frozen layer4 features, shot by shot
        q4 = model._extract(query, need_layer4=True)["layer4"]
        by_hand = []
        for i in range(2):
            s = model._extract(supports[:, i], need_layer4=True, mask=masks[:, [i]])
            by_hand.append(guided_region_map(q4, s["layer4"], s["mask"]))
    mean_one = (one[0]["guided_region_map"] + one[1]["guided_region_map"]) / 2
    assert torch.allclose(two["guided_region_map"], mean_one, atol=1e-6)
    assert torch.allclose(two["guided_region_map"], (by_hand[0] + by_hand[1]) / 2, atol=1e-6)
    assert torch.equal(two["prior_region_map"], one[0]["prior_region_map"])  # query-only: no shot dependence


def test_k_identical_shots_give_the_one_shot_prediction(model):
    query, supports, masks = episode(b=1, k=1, seed=4)
    with torch.no_grad():
        one = model(query, supports, masks)["logits"]
        five = model(query, supports.expand(-1, 5, -1, -1, -1), masks.expand(-1, 5, -1, -1))["logits"]
    assert torch.allclose(one, five, atol=1e-5)


def test_loss_is_main_ce_plus_the_mean_of_aux_ce_with_255_ignored():
    g = torch.Generator().manual_seed(0)
    out = {"logits": torch.randn(2, 2, 16, 16, generator=g), "aux_logits": [torch.randn(2, 2, s, s, generator=g) for s in (16, 8, 4)]}
    target = (torch.rand(2, 16, 16, generator=g) > 0.5).long()
    target[0, :4] = 255
    total, parts = segmentation_loss(out, target, aux_weight=1.0)
    valid = target != 255

    def ce(logits):  # re-derived: mean negative log-likelihood over the non-ignored pixels
        logits = F.interpolate(logits, size=(16, 16), mode="bilinear", align_corners=False)  # glocon.ops.resize
        nll = -logits.log_softmax(1).gather(1, target.clamp(max=1).unsqueeze(1)).squeeze(1)
        return nll[valid].mean()

    aux = sum(ce(a) for a in out["aux_logits"]) / 3
    assert total.item() == pytest.approx((ce(out["logits"]) + aux).item(), rel=1e-5)
    assert parts["main_loss"] == pytest.approx(ce(out["logits"]).item(), rel=1e-5)
    assert parts["aux_loss"] == pytest.approx(aux.item(), rel=1e-5)
    everything_ignored = torch.full_like(target, 255)
    zero, _ = segmentation_loss(out, everything_ignored)
    assert zero.item() == 0.0


def test_prior_map_off_removes_the_branch_and_its_fem_channel():
    torch.manual_seed(0)
    m = QGNet(tiny_cfg(use_prior_map=False), prior=None).eval()  # no prior needed
    assert m.prior is None and m.fem.n_maps == 1 and not hasattr(m, "down_prior")
    with torch.no_grad():
        out = m(*episode())
    assert "prior_region_map" not in out and out["guided_region_map"].shape == (2, 1, 9, 9)
    assert out["logits"].shape == (2, 2, SIZE, SIZE)


def test_guided_map_off_keeps_only_the_prior_map(prior_export):
    torch.manual_seed(0)
    m = build_qgnet(tiny_cfg(use_guided_map=False, prior_path=str(prior_export))).eval()
    assert m.fem.n_maps == 1
    with torch.no_grad():
        out = m(*episode())
    assert "guided_region_map" not in out and out["prior_region_map"].shape == (2, 1, 9, 9)
    both_off = QGNet(tiny_cfg(use_guided_map=False, use_prior_map=False)).eval()
    assert both_off.fem.n_maps == 0 and both_off(*episode())["logits"].shape == (2, 2, SIZE, SIZE)


@pytest.mark.parametrize("source,channels", [("local_head", 128), ("backbone", 512), ("export", 512)])
def test_prior_source_picks_which_prior_features_are_p_q(prior_export, source, channels):
    torch.manual_seed(0)
    m = build_qgnet(tiny_cfg(prior_path=str(prior_export), prior_source=source)).eval()
    assert m.down_prior[0].in_channels == channels
    with torch.no_grad():
        assert m.prior_features(torch.rand(1, 3, SIZE, SIZE)).shape[1] == channels
        assert m(*episode(b=1))["prior_region_map"].shape == (1, 1, 9, 9)


def test_paper_variant_computes_the_prior_map_from_the_bridge_features(prior_export):
    torch.manual_seed(0)
    m = build_qgnet(tiny_cfg(prior_path=str(prior_export), prior_map_query="bridge")).eval()
    assert m.down_bridge_prior[0].in_channels == 128 + 256  # cat(layer3, layer2) of resnet18
    with torch.no_grad():
        assert m(*episode(b=1))["prior_region_map"].shape == (1, 1, 9, 9)


def test_prior_map_on_without_a_prior_is_a_config_error_naming_prior_path():
    with pytest.raises(ConfigError, match="prior_path"):
        build_qgnet(tiny_cfg())


def test_config_rejects_bad_bins_and_unknown_backbones():
    with pytest.raises(ValueError):
        QGNetConfig(bins=())
    with pytest.raises(ValueError):
        QGNetConfig(backbone="resnet9000")


def test_learnable_parameters_match_pfenet_and_the_release_layer_for_layer():
    """Counts re-derived from the layer lists of PFENet's model/PFENet.py and the release's PFENet_QGNet.py."""
    conv = lambda cin, cout, k=1, bias=False: cin * cout * k * k + (cout if bias else 0)  # noqa: E731
    c, fea, bins = 256, 1024 + 512, 4
    pfenet = (
        2 * conv(fea, c)  # down_query, down_supp
        + bins * conv(2 * c + 1, c)  # init_merge (one prior mask)
        + bins * 2 * conv(c, c, 3)  # beta_conv
        + bins * (conv(c, c, 3) + conv(c, 2, 1, bias=True))  # inner_cls
        + (bins - 1) * conv(2 * c, c)  # alpha_conv
        + conv(bins * c, c) + 2 * conv(c, c, 3)  # res1, res2
        + conv(c, c, 3) + conv(c, 2, 1, bias=True)  # cls
    )
    off = QGNet(QGNetConfig(use_prior_map=False))
    assert sum(p.numel() for p in off.trainable_parameters()) == pfenet
    # the release: one more map channel per init_merge, down_learn_super / _unsuper (3x3, 2048 -> 256)
    release = pfenet + bins * c + 2 * conv(2048, c, 3)
    on = QGNet(QGNetConfig(), PriorExtractor(PriorArch(backbone="resnet50")))
    assert sum(p.numel() for p in on.trainable_parameters()) == release


def test_a_few_sgd_steps_on_one_episode_lower_its_loss(prior_export):
    torch.manual_seed(0)
    m = build_qgnet(tiny_cfg(prior_path=str(prior_export)))
    query, supports, masks = episode(b=2, k=1, seed=8)
    target = torch.zeros(2, SIZE, SIZE, dtype=torch.long)
    target[:, 20:60, 10:40] = 1
    target[:, :, :3] = 255

    def eval_loss() -> float:
        m.eval()
        with torch.no_grad():
            return m.loss(m(query, supports, masks), target)[0].item()

    before = eval_loss()
    opt = torch.optim.SGD(m.trainable_parameters(), lr=0.1, momentum=0.9)  # large lr: only 8 steps
    m.train()
    for _ in range(8):
        opt.zero_grad()
        m.loss(m(query, supports, masks), target)[0].backward()
        opt.step()
    after = eval_loss()
    assert after < 0.9 * before, (before, after)


@pytest.mark.parametrize("use_prior_map", [True, False])
def test_backbone_weights_prior_starts_f_from_the_prior_backbone(prior_export, use_prior_map):
    cfg = QGNetConfig(backbone="resnet18", backbone_weights="prior", prior_path=str(prior_export), use_prior_map=use_prior_map, bins=(0.5, 0.25))
    model = build_qgnet(cfg)
    prior = load_prior_extractor(prior_export)
    for name, tensor in prior.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[name], tensor), name
    assert (model.prior is not None) == use_prior_map  # the prior branch is only kept when its map is on


def test_backbone_weights_prior_needs_the_same_architecture(prior_export):
    cfg = QGNetConfig(backbone="resnet50", backbone_weights="prior", prior_path=str(prior_export))
    with pytest.raises(ConfigError, match="resnet18"):
        build_qgnet(cfg)
