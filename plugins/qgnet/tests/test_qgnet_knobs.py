"""QGNet's departures from PFENet as knobs: dropout reaches every Dropout2d, the guided map's
layer, the map scale at FEM's merge, and the oracle map diagnostic (issues 18 and 23)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from glocon.ops import resize
from glocon_qgnet.model import QGNetConfig, build_qgnet, oracle_map

SIZE = 65


def _model(**kw):
    torch.manual_seed(0)
    cfg = QGNetConfig(backbone="resnet18", reduce_dim=16, bins=(4, 2), bins_reference=None, use_prior_map=False, **kw)
    return build_qgnet(cfg)


def _episode(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(1, 3, SIZE, SIZE, generator=g)
    s = torch.rand(1, 1, 3, SIZE, SIZE, generator=g)
    m = torch.zeros(1, 1, SIZE, SIZE)
    m[..., 10:40, 20:50] = 1
    label = torch.zeros(1, SIZE, SIZE, dtype=torch.long)
    label[:, 5:30, 30:60] = 1
    return q, s, m, label


def test_the_dropout_knobs_reach_every_dropout2d(prior_export):
    model = build_qgnet(QGNetConfig(backbone="resnet18", reduce_dim=16, prior_conv_dim=16, prior_path=str(prior_export), dropout=0.3, cls_dropout=0.2))
    drops = {name: m.p for name, m in model.named_modules() if isinstance(m, nn.Dropout2d)}
    reductions = {n: p for n, p in drops.items() if n.startswith(("down_query", "down_supp", "down_bridge_prior", "down_prior"))}
    classifiers = {n: p for n, p in drops.items() if n.startswith(("fem.cls", "fem.inner_cls"))}
    assert len(reductions) == 4 and set(reductions.values()) == {0.3}
    assert len(classifiers) == 5 and set(classifiers.values()) == {0.2}
    assert drops.keys() == reductions.keys() | classifiers.keys()  # no Dropout2d outside the knobs' reach
    off = _model(dropout=0.0, cls_dropout=0.0).train()
    assert all(m.p == 0 for m in off.modules() if isinstance(m, nn.Dropout))
    q, s, m, _ = _episode()
    with torch.no_grad():  # with no dropout, train mode is deterministic (frozen BatchNorm stays in eval)
        assert torch.equal(off(q, s, m)["logits"], off(q, s, m)["logits"])


def test_the_guided_map_reads_the_layer_the_config_names():
    q, s, m, _ = _episode()
    l3, l4 = _model(guided_map_layer="layer3").eval(), _model(guided_map_layer="layer4").eval()
    with torch.no_grad():
        a, b = l3(q, s, m)["guided_region_map"], l4(q, s, m)["guided_region_map"]
        assert "layer4" not in l3.encode_support(s[:, 0], m[:, 0]) and "layer4" in l4.encode_support(s[:, 0], m[:, 0])
    assert a.shape == b.shape and not torch.allclose(a, b)


def test_the_oracle_map_is_the_query_label_at_the_map_grid_and_is_refused_without_it():
    q, s, m, label = _episode()
    model = _model(guided_map_source="oracle").eval()
    assert model.wants_query_label and not _model().wants_query_label
    with torch.no_grad():
        out = model(q, s, m, query_label=label)
    grid = out["guided_region_map"].shape[-2:]
    assert torch.allclose(out["guided_region_map"], oracle_map(label, grid))
    assert out["guided_region_map"].max() == 1.0 and out["guided_region_map"].min() == 0.0
    with pytest.raises(ValueError, match="query_label"):
        model(q, s, m)


def test_map_scale_multiplies_what_enters_fems_merge():
    q, s, m, label = _episode()
    seen = {}
    models = {scale: _model(guided_map_source="oracle", map_scale=scale).eval() for scale in (1.0, 8.0)}
    for scale, model in models.items():
        model.fem.init_merge[0].register_forward_hook(lambda mod, inp, out, scale=scale: seen.__setitem__(scale, inp[0][:, -1:].clone()))
        with torch.no_grad():
            model(q, s, m, query_label=label)
    assert torch.allclose(seen[8.0], 8.0 * seen[1.0])


@pytest.mark.parametrize("size", [64, 128, 100])
def test_an_upsampled_cell_covers_exactly_its_own_pixels_at_sizes_that_are_not_16k_plus_1(size):
    # the first column of cells of a 4 x 4 map on: after the resize every map, logit and mask goes
    # through, the pixels above 0.5 are exactly those cells' (align_corners=True: (size - 1) / 6 columns)
    grid = torch.zeros(1, 1, 4, 4)
    grid[..., :, 0] = 1.0
    up = resize(grid, (size, size))[0, 0] > 0.5
    cell = size // 4
    expect = torch.zeros(size, size, dtype=torch.bool)
    expect[:, :cell] = True
    assert torch.equal(up, expect)


def test_paper_scale_configs_keep_pfenets_values_and_cpu_configs_state_their_departures():
    from pathlib import Path

    from glocon.config import load_config
    from glocon.fewshot.config import FewShotConfig

    configs = Path(__file__).resolve().parents[3] / "configs"
    for name in ("fewshot-pascal-r50.yaml", "fewshot-coco-r50.yaml"):
        cfg = load_config(FewShotConfig, configs / name)
        model = QGNetConfig.model_validate(cfg.model)
        assert (model.dropout, model.cls_dropout, model.guided_map_layer, model.map_scale, model.reduce_dim) == (0.5, 0.1, "layer4", 1.0, 256), name
        assert cfg.fit.val_fraction == 0.0 and cfg.fit.patience is None and cfg.fit.lr in (0.0025, 0.005), name  # PFENet: 0.0025 PASCAL, 0.005 COCO
    for name in ("fewshot-demo.yaml", "fewshot-coco128.yaml"):
        cfg = load_config(FewShotConfig, configs / name)
        model = QGNetConfig.model_validate(cfg.model)
        assert model.dropout == 0.0 and model.guided_map_layer == "layer3" and model.map_scale > 1 and model.reduce_dim == 128, name
        assert cfg.fit.val_fraction > 0 and cfg.fit.patience and cfg.fit.steps >= 1200, name
