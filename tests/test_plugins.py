"""The plugin protocol: entry-point discovery, broken plugins, the runner delegation, and both heads on tiny tensors."""

from __future__ import annotations

import subprocess
import sys
import types
import warnings
from importlib.metadata import entry_points

import pytest
import torch
import torch.nn.functional as F

import glocon.plugins as plugins
from glocon.errors import ConfigError
from glocon.models.prior import PriorArch, PriorExtractor, load_prior_extractor, save_export
from glocon.plugins import Plugin, PluginError, PluginLoadWarning, discover_plugins, list_plugins, load_plugin

SIZE = 65


class FakeEntryPoint:
    def __init__(self, name, target=None, error=None, value="fake_pkg.mod:plugin"):
        self.name, self.value, self._target, self._error = name, value, target, error
        self.dist = types.SimpleNamespace(name="fake-dist")

    def load(self):
        if self._error is not None:
            raise self._error
        return self._target


@pytest.fixture
def with_fake_entry_points(monkeypatch):
    real = list(entry_points(group=plugins.GROUP))

    def install(*fakes):
        monkeypatch.setattr(plugins, "_entry_points", lambda: [*real, *fakes])

    return install


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("prior") / "prior.pt"
    save_export(PriorExtractor(PriorArch(backbone="resnet18")), path)
    return load_prior_extractor(path)


def episode(b=2, k=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(b, k, SIZE, SIZE)
    masks[..., 12:50, 20:55] = 1.0
    return torch.rand(b, 3, SIZE, SIZE, generator=g), torch.rand(b, k, 3, SIZE, SIZE, generator=g), masks


# -- discovery ----------------------------------------------------------------------------------
def test_discovery_lists_both_installed_plugins_through_entry_points():
    found = discover_plugins()
    assert {"proto", "qgnet"} <= set(found)
    assert found["qgnet"].trainable and not found["proto"].trainable
    assert found["qgnet"].config_model.__name__ == "QGNetConfig"
    assert found["proto"].config_model.__name__ == "ProtoConfig"
    rows = {r["name"]: r for r in list_plugins()}
    assert rows["qgnet"]["status"] == "ok" and "glocon-qgnet" in rows["qgnet"]["source"]
    assert rows["proto"]["kind"] == "training-free"


def test_a_broken_entry_point_is_reported_and_the_others_still_list(with_fake_entry_points):
    with_fake_entry_points(
        FakeEntryPoint("broken", error=ModuleNotFoundError("No module named 'fake_pkg'")),
        FakeEntryPoint("notaplugin", target=object()),
    )
    with pytest.warns(PluginLoadWarning) as record:
        found = discover_plugins()
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 2 and "'broken'" in messages[0] and "No module named 'fake_pkg'" in messages[0]
    assert {"proto", "qgnet"} <= set(found) and "broken" not in found and "notaplugin" not in found
    rows = {r["name"]: r for r in list_plugins()}
    assert rows["broken"]["status"].startswith("error: ModuleNotFoundError")
    assert "expected a glocon.plugins.Plugin instance" in rows["notaplugin"]["status"]
    assert rows["qgnet"]["status"] == "ok"
    with pytest.raises(PluginError, match="'broken' is installed but failed to load.*fake_pkg"):
        load_plugin("broken")
    assert load_plugin("proto").name == "proto"


def test_unknown_plugin_error_names_it_and_lists_the_available_ones():
    with pytest.raises(PluginError, match=r"unknown plugin 'qgent'.*proto.*qgnet"):
        load_plugin("qgent")


def test_a_plugin_class_or_a_mismatched_name_through_an_entry_point(with_fake_entry_points):
    class Mine(Plugin):
        name = "mine"

    class Liar(Plugin):
        name = "something-else"

    with_fake_entry_points(FakeEntryPoint("mine", target=Mine), FakeEntryPoint("liar", target=Liar()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)
        found = discover_plugins()
    assert isinstance(found["mine"], Mine)
    assert "liar" not in found
    assert "names must match" in {r["name"]: r for r in list_plugins()}["liar"]["status"]


def test_the_platform_never_imports_a_plugin_by_name():
    """Importing the protocol loads no plugin; only entry-point discovery does."""
    code = (
        "import sys, glocon.plugins as p; "
        "before = sorted(m for m in sys.modules if m.startswith(('glocon_qgnet', 'glocon.builtin_plugins'))); "
        "p.discover_plugins(); "
        "after = [m for m in ('glocon_qgnet.plugin', 'glocon.builtin_plugins.proto') if m in sys.modules]; "
        "print(before, after)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[] ['glocon_qgnet.plugin', 'glocon.builtin_plugins.proto']"


def test_fit_evaluate_objective_delegate_to_the_shared_runner(monkeypatch):
    calls = []
    runner = types.ModuleType("glocon.fewshot.runner")
    runner.fit = lambda plugin, cfg: calls.append(("fit", plugin.name, cfg)) or "fitted"
    runner.evaluate = lambda plugin, cfg: calls.append(("evaluate", plugin.name, cfg)) or {"miou": 0.5}
    runner.objective = lambda plugin, prior_path, cfg: calls.append(("objective", plugin.name, prior_path)) or 0.25
    package = types.ModuleType("glocon.fewshot")
    package.runner = runner
    monkeypatch.setitem(sys.modules, "glocon.fewshot", package)
    monkeypatch.setitem(sys.modules, "glocon.fewshot.runner", runner)
    qgnet = load_plugin("qgnet")
    assert qgnet.fit("cfg") == "fitted"
    assert qgnet.evaluate("cfg") == {"miou": 0.5}
    score = load_plugin("proto").objective("prior.pt", "cfg")
    assert score == 0.25 and isinstance(score, float)
    assert calls == [("fit", "qgnet", "cfg"), ("evaluate", "qgnet", "cfg"), ("objective", "proto", "prior.pt")]


def test_plugin_configs_reject_unknown_keys_naming_the_key():
    with pytest.raises(ConfigError, match="unknown key 'treshold'.*did you mean 'threshold'"):
        load_plugin("proto").make_config({"treshold": 0.3})
    with pytest.raises(ConfigError, match="bins"):
        load_plugin("qgnet").make_config({"bins": "many"})


# -- both heads on tiny tensors -----------------------------------------------------------------
@pytest.mark.parametrize("name", ["proto", "qgnet"])
@pytest.mark.parametrize("k", [1, 5])
def test_both_plugins_build_and_segment_one_and_five_shot_episodes(prior, name, k):
    plugin = load_plugin(name)
    extra = {"backbone": "resnet18", "reduce_dim": 32, "prior_conv_dim": 32} if name == "qgnet" else {}
    torch.manual_seed(0)
    model = plugin.build_model(plugin.make_config(extra), prior).eval()
    with torch.no_grad():
        out = model(*episode(b=2, k=k))
    assert out["logits"].shape == (2, 2, SIZE, SIZE) and torch.isfinite(out["logits"]).all()
    target = (torch.rand(2, SIZE, SIZE) > 0.5).long()
    loss, parts = model.loss(out, target)
    assert torch.isfinite(loss) and "loss" in parts
    n_trainable = sum(p.numel() for p in model.trainable_parameters())
    assert (n_trainable > 0) == plugin.trainable


def test_qgnet_plugin_loads_the_prior_export_named_in_its_config(tmp_path):
    torch.manual_seed(11)
    path = tmp_path / "prior.pt"
    save_export(PriorExtractor(PriorArch(backbone="resnet18", prior_source="local_head")), path)
    plugin = load_plugin("qgnet")
    model = plugin.build_model(plugin.make_config({"backbone": "resnet18", "reduce_dim": 16, "prior_conv_dim": 16, "prior_path": str(path)}), None)
    assert model.prior.arch.prior_source == "local_head" and model.down_prior[0].in_channels == 128
    assert not any(p.requires_grad for p in model.prior.parameters())


def test_proto_threshold_prediction_is_the_normalised_cosine_to_the_mean_prototype(prior):
    plugin = load_plugin("proto")
    model = plugin.build_model(plugin.make_config({"layer": "layer3", "threshold": 0.4}), prior)
    query, supports, masks = episode(b=1, k=3, seed=5)
    masks[:, 1, :, :30] = 0  # shots differ, so the K-shot mean matters
    with torch.no_grad():
        pred = model(query, supports, masks)["logits"].argmax(1)
        # by hand: masked average pooling per shot (mask area-resized), mean over shots, cosine, min-max
        qf = model.features(query)[0]  # (C, h, w)
        protos = []
        for i in range(3):
            sf = model.features(supports[:, i])[0]
            m = F.adaptive_avg_pool2d(masks[:, i : i + 1], sf.shape[-2:])[0]
            protos.append((sf * m).sum(dim=(1, 2)) / (m.sum() + 1e-5))
        proto = torch.stack(protos).mean(0)
        cos = (qf * proto[:, None, None]).sum(0) / (qf.norm(dim=0) * proto.norm() + 1e-7)
        s = (cos - cos.min()) / (cos.max() - cos.min() + 1e-7)
        s = F.interpolate(s[None, None], size=(SIZE, SIZE), mode="bilinear", align_corners=False)[0, 0]  # glocon.ops.resize: pixel centres aligned
    expected = s > 0.4
    near = (s - 0.4).abs() < 1e-5  # float ties at the threshold may go either way
    assert torch.equal(pred[0][~near].bool(), expected[~near])
    assert 0 < expected.sum() < expected.numel()


def _two_colour(box, n=96):
    img = torch.tensor((0.1, 0.3, 0.9)).view(3, 1, 1).repeat(1, n, n)
    mask = torch.zeros(n, n)
    r0, r1, c0, c1 = box
    img[:, r0:r1, c0:c1] = torch.tensor((0.9, 0.1, 0.1)).view(3, 1, 1)
    mask[r0:r1, c0:c1] = 1
    return img, mask


def test_proto_fg_bg_mode_segments_a_two_colour_episode(prior):
    """PANet's argmax over foreground / background prototypes finds the object colour in the query."""
    query, qmask = _two_colour((20, 70, 30, 80))
    support, smask = _two_colour((10, 50, 10, 60))
    plugin = load_plugin("proto")
    model = plugin.build_model(plugin.make_config({"layer": "layer2", "mode": "fg_bg"}), prior)
    with torch.no_grad():
        pred = model(query[None], support[None, None], smask[None, None])["logits"].argmax(1)[0].float()
    iou = (pred * qmask).sum() / ((pred + qmask) > 0).sum()
    assert iou > 0.5


def test_proto_on_a_plain_backbone_needs_no_prior():
    plugin = load_plugin("proto")
    model = plugin.build_model(plugin.make_config({"source": "backbone", "backbone": "resnet18", "layer": "layer3"}), None)
    with torch.no_grad():
        assert model(*episode(b=1, k=2))["logits"].shape == (1, 2, SIZE, SIZE)
    with pytest.raises(ConfigError, match="needs source='prior'"):
        plugin.build_model(plugin.make_config({"source": "backbone", "layer": "local_head"}), None)
    with pytest.raises(ConfigError, match="prior_path"):
        plugin.build_model(plugin.make_config({}), None)
