"""``glocon export`` (glocon.models.export): a prior as a timm / torchvision state dict or an ONNX
dense map, each giving glocon's own features outside glocon; bad inputs are one line and an exit code.

The priors are made here from randomly initialised models, saved the way pretraining saves them
(``save_export``), with random BatchNorm statistics: at init those are 0 and 1, under which an
export that dropped or swapped them would still give the same features.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import timm
import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from glocon.cli import main
from glocon.models import export as ex
from glocon.models.prior import PriorArch, PriorExtractor, load_prior_extractor, read_export, save_export

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
LAYERS = ("layer2", "layer3", "layer4")


def make_prior(path: Path, backbone: str, output_stride: int, seed: int = 0) -> Path:
    """A prior at random init with BatchNorm as training leaves it: random affine parameters and
    running statistics measured on images, so its maps are of a trained prior's size (a few units)."""
    torch.manual_seed(seed)
    model = PriorExtractor(PriorArch(backbone=backbone, output_stride=output_stride), load_init_weights=False)
    g = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]  # timm's BatchNormAct2d too
    for m in norms:
        m.weight.data.copy_(0.5 + torch.rand(m.num_features, generator=g))
        m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=g))
        m.reset_running_stats()
        m.momentum = None  # one batch's statistics, exactly
    model.train()
    with torch.no_grad():
        model.backbone(model.normalize(torch.rand(4, 3, 64, 64, generator=g)))
    for m in norms:
        m.momentum = 0.1
    save_export(model.eval(), path)
    return path


@pytest.fixture(scope="module")
def priors(tmp_path_factory) -> dict[str, Path]:
    """The demo's resnet18 (output stride 16), a stock-stride resnet50, and Lite0 at stride 16."""
    d = tmp_path_factory.mktemp("priors")
    return {
        "resnet18": make_prior(d / "r18.pt", "resnet18", 16),
        "resnet50": make_prior(d / "r50.pt", "resnet50", 32, seed=1),
        "efficientnet_lite0": make_prior(d / "lite0.pt", "efficientnet_lite0", 16, seed=2),
    }


def cli(capsys, *args) -> subprocess.CompletedProcess:
    code = main(["export", *map(str, args)])
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def images(n: int = 2, h: int = 64, w: int = 64) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(7))


def max_diff(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


def assert_onnx_matches(got, prior: PriorExtractor, x: torch.Tensor, which: str) -> None:
    """onnxruntime's features are glocon's: max abs diff <= 1e-4 for maps within +-1, 1e-4 of the
    largest value for larger ones, and no further from exact (float64) arithmetic than glocon's own
    float32 result is, give or take 2x. An absolute 1e-4 is float32's own noise floor on these maps:
    for the Lite0 prior (values to ~16) torch's float32 map is itself 1.0e-4 from the float64 one."""
    with torch.no_grad():
        want = prior.dense_map(x, which)
        exact = copy.deepcopy(prior).double().dense_map(x.double(), which)
    assert max_diff(got, want) <= 1e-4 * max(1.0, float(want.abs().max()))
    assert max_diff(got, exact) <= 2 * max_diff(want, exact) + 1e-6


def external_layers(model: nn.Module, fmt: str, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """layer2..4 the way a user of each framework reads them."""
    with torch.no_grad():
        if fmt == "torchvision":
            return create_feature_extractor(model, {k: k for k in LAYERS})(x)
        return dict(zip(LAYERS, model.forward_intermediates(x, indices=[2, 3, 4], intermediates_only=True)))


def assert_same_layers(model: nn.Module, fmt: str, prior: PriorExtractor, x: torch.Tensor) -> None:
    got = external_layers(model.eval(), fmt, prior.normalize(x))
    with torch.no_grad():
        for layer in LAYERS:
            assert max_diff(got[layer], prior.dense_map(x, layer)) <= 1e-5, layer


def readme_python() -> list[str]:
    """The Python blocks (``~~~python``) of README's "Using a glocon prior elsewhere"."""
    text = README.read_text()
    section = text[text.index("## Using a glocon prior elsewhere"):]
    section = section[: section.index("\n## ")]
    blocks = [textwrap.dedent(b) for b in re.findall(r"^ *~~~python\n(.*?)^ *~~~", section, re.S | re.M)]
    assert len(blocks) == 2, "README: expected the loading lines and the ResNet dilation snippet"
    return blocks


# -- what the exports give ------------------------------------------------------------------------
# resnet18 is read through both frameworks (the README test), resnet50's Bottleneck through
# torchvision (timm's ResNets have torchvision's keys), Lite0 through timm (torchvision has none).
def test_readme_lines_load_the_demo_priors_exports_and_read_its_features(priors, capsys, tmp_path, monkeypatch):
    """The demo's prior (resnet18 at stride 16): the README's commands write the three files, its
    loading lines (run verbatim) load them strictly, and each gives glocon's own maps."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "runs" / "demo" / "pretrain" / "prior"
    folder.mkdir(parents=True)
    (folder / "prior.pt").write_bytes(priors["resnet18"].read_bytes())
    outs = {}
    for fmt, name in (("timm", "prior-timm.pth"), ("torchvision", "prior-torchvision.pth"), ("onnx", "prior.onnx")):
        outs[fmt] = cli(capsys, "runs/demo/pretrain/prior/prior.pt", "--format", fmt, f"runs/demo/pretrain/prior/{name}")
        assert outs[fmt].returncode == 0 and outs[fmt].stderr == "", outs[fmt].stderr
        assert outs[fmt].stdout.startswith(f"wrote runs/demo/pretrain/prior/{name}")
    assert sorted(p.name for p in folder.iterdir()) == ["prior-timm.pth", "prior-torchvision.pth", "prior.onnx", "prior.pt"]  # no temp files left
    assert "output stride 16" in outs["timm"].stdout and "fc is timm's fresh init" in outs["timm"].stdout

    prior = load_prior_extractor(folder / "prior.pt")
    x = images(1)
    loading, dilate = readme_python()
    lines = loading.strip().splitlines()
    assert len(lines) == 3
    ns = {"timm": timm, "torch": torch, "torchvision": torchvision, "onnxruntime": onnxruntime, "images": x.numpy()}
    for line, fmt in zip(lines[:2], ("timm", "torchvision")):
        exec(line, ns)  # README's line, verbatim
        model = ns["m"]
        assert model.layer4[0].conv1.stride == (2, 2)  # a stock model: stride 32, not the prior's grid
        assert external_layers(model.eval(), fmt, prior.normalize(x))["layer4"].shape[-2:] == (2, 2)
        exec(dilate, ns)  # README's dilation for stride 16, verbatim
        assert_same_layers(model, fmt, prior, x)
    exec(lines[2], ns)
    assert ns["features"].shape == (1, 512, 4, 4)
    assert_onnx_matches(ns["features"], prior, x, "prior")


@pytest.mark.parametrize("arch, fmt", [("resnet50", "torchvision"), ("efficientnet_lite0", "timm")])
def test_a_state_dict_export_loads_strict_and_gives_the_priors_features(priors, capsys, tmp_path, arch, fmt):
    out = cli(capsys, priors[arch], "--format", fmt, tmp_path / "x.pth")
    assert out.returncode == 0, out.stderr
    state = torch.load(tmp_path / "x.pth", weights_only=True)
    assert type(state) is dict and all(isinstance(v, torch.Tensor) for v in state.values())  # a plain state dict
    prior = load_prior_extractor(priors[arch])
    if arch == "efficientnet_lite0":  # timm's output_stride is glocon's for Lite0: the prior's own grid
        model = timm.create_model("tf_efficientnet_lite0", output_stride=16)
        assert 'output_stride=16' in out.stdout
    else:
        model = timm.create_model(arch) if fmt == "timm" else getattr(torchvision.models, arch)()
    model.load_state_dict(state, strict=True)
    assert_same_layers(model, fmt, prior, images())
    # the "input:" line gives the statistics the model must be fed (the test fed the prior's)
    stats = [float(v) for v in re.findall(r"\d\.\d+", out.stdout.split("input:")[1].splitlines()[0])]
    assert max_diff(stats, [*prior.mean.flatten().tolist(), *prior.std.flatten().tolist()]) <= 1e-4


def test_the_head_is_the_frameworks_fresh_init_the_same_on_every_export(priors):
    """fc is not in a prior: the export carries torchvision's own init (seed 0), so one prior gives
    one file, and the caller's random state is left as it was."""
    prior = load_prior_extractor(priors["resnet18"])
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    first, _, _ = ex.state_dict_export(prior, "torchvision")
    assert torch.equal(torch.rand(3), before)
    second, _, _ = ex.state_dict_export(prior, "torchvision")
    assert all(torch.equal(first[k], second[k]) for k in first)
    torch.manual_seed(ex.HEAD_SEED)
    fresh = torchvision.models.resnet18()
    assert torch.equal(first["fc.weight"], fresh.fc.weight) and first["fc.weight"].abs().sum() > 0
    assert torch.equal(first["layer1.0.bn1.running_var"], prior.backbone.stages.layer1[0].bn1.running_var)


@pytest.mark.parametrize("arch, which", [("efficientnet_lite0", None), ("resnet18", "local_head")])
def test_the_onnx_file_gives_glocons_dense_map_in_onnxruntime(priors, capsys, tmp_path, arch, which):
    args = ["--map", which] if which else []
    out = cli(capsys, priors[arch], "--format", "onnx", tmp_path / "p.onnx", *args)
    assert out.returncode == 0, out.stderr
    assert re.search(r"check: onnxruntime matches glocon's dense_map to \S+", out.stdout)
    prior = load_prior_extractor(priors[arch])
    session = onnxruntime.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"])
    for shape in ((1, 64, 64), (3, 72, 56)):  # batch, height and width are free
        x = images(*shape)
        got = session.run(["features"], {"images": x.numpy()})[0]
        assert_onnx_matches(got, prior, x, which or "prior")
    assert got.shape[1] == (128 if which == "local_head" else 320)
    meta = {p.key: p.value for p in onnx.load(tmp_path / "p.onnx", load_external_data=False).metadata_props}
    assert meta["glocon.map"] == (which or "prior") and meta["glocon.output_stride"] == "16" and "[0, 1]" in meta["glocon.input"]


def test_a_failed_check_writes_nothing_and_keeps_the_old_file(priors, capsys, tmp_path, monkeypatch):
    target = tmp_path / "x.pth"
    target.write_bytes(b"old")
    monkeypatch.setattr(ex, "TOLERANCE", -1.0)  # no difference passes: the check must refuse
    out = cli(capsys, priors["resnet18"], "--format", "torchvision", target)
    assert out.returncode == 1 and out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr
    assert "nothing written" in out.stderr
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.pth"]


# -- bad inputs: one line, the file or argument named, the exit code, nothing written ----------------
def _bad_inputs(tmp: Path, priors: dict[str, Path]) -> dict[str, tuple[list, int, str]]:
    (tmp / "notes.txt").write_text("not a prior\n")
    torch.save({"weights": torch.zeros(2)}, tmp / "random.pt")
    payload = read_export(priors["resnet18"])
    payload["arch"]["backbone"] = "vgg16_bn"
    torch.save(payload, tmp / "vgg.pt")
    payload["arch"]["backbone"] = "resnet9000"
    torch.save(payload, tmp / "unknown-arch.pt")
    (tmp / "afile").write_text("")
    r18, out = priors["resnet18"], tmp / "out.pth"
    return {  # name: (arguments, exit code, what the line must name)
        "text file": ([tmp / "notes.txt", "--format", "timm", out], 1, "notes.txt"),
        "random .pt": ([tmp / "random.pt", "--format", "timm", out], 1, "random.pt"),
        "missing prior": ([tmp / "nope.pt", "--format", "onnx", out], 1, "nope.pt"),
        "unknown arch": ([tmp / "unknown-arch.pt", "--format", "onnx", out], 1, "resnet9000"),
        "unknown format": ([r18, "--format", "keras", out], 2, "keras"),
        "no format": ([r18, out], 2, "--format"),
        "OUT's folder missing": ([r18, "--format", "timm", tmp / "no" / "out.pth"], 2, str(tmp / "no")),
        "OUT's folder is a file": ([r18, "--format", "timm", tmp / "afile" / "out.pth"], 2, "afile"),
        "OUT is a folder": ([r18, "--format", "timm", tmp], 2, str(tmp)),
        "lite0 to torchvision": ([priors["efficientnet_lite0"], "--format", "torchvision", out], 2, "'efficientnet_lite0' has no exact torchvision"),
        "vgg to timm": ([tmp / "vgg.pt", "--format", "timm", out], 2, "'vgg16_bn' has no exact timm"),
        "--map with timm": ([r18, "--format", "timm", "--map", "layer3", out], 2, "--map"),
        "unknown --map": ([r18, "--format", "onnx", "--map", "layer9", out], 2, "layer9"),
    }


BAD = ["text file", "random .pt", "missing prior", "unknown arch", "unknown format", "no format", "OUT's folder missing",
       "OUT's folder is a file", "OUT is a folder", "lite0 to torchvision", "vgg to timm", "--map with timm", "unknown --map"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_error_line_and_its_exit_code(priors, capsys, tmp_path, case):
    cases = _bad_inputs(tmp_path, priors)
    assert sorted(cases) == sorted(BAD)
    args, code, named = cases[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    out = cli(capsys, *args)
    assert out.returncode == code, (out.returncode, out.stderr)
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1 and named in out.stderr, out.stderr
    assert out.stdout == "" and sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_the_installed_command_gives_the_one_line_too(tmp_path):
    """Through ``python -m glocon.cli``, as a user runs it: no traceback, the exit code of a data error."""
    (tmp_path / "notes.txt").write_text("not a prior\n")
    done = subprocess.run([sys.executable, "-m", "glocon.cli", "export", str(tmp_path / "notes.txt"), "--format", "onnx", str(tmp_path / "o.onnx")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.startswith("error: prior export ") and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "o.onnx").exists()
