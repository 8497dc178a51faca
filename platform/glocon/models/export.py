"""``glocon export``: a prior export (``prior.pt``) in a form other frameworks load without glocon.

Three formats, each checked before anything is written:

- ``torchvision``: a plain state dict (``torch.save(dict)``) that ``torchvision.models.<arch>()``
  loads with ``strict=True``; ResNets only (torchvision has no EfficientNet-Lite).
- ``timm``: a plain state dict that ``timm.create_model(<name>)`` loads with ``strict=True``:
  ``resnet18`` / ``resnet50`` / ``resnet101`` under their own names, ``efficientnet_lite0`` as
  ``tf_efficientnet_lite0`` (the model glocon builds it from: TF "SAME" padding, BN eps 1e-3).
- ``onnx``: the dense feature extractor itself, ``dense_map(images, map)`` with the prior's own
  output stride and its input normalisation inside: float32 ``images`` (N, 3, H, W), RGB in [0, 1],
  any N, H, W -> ``features`` (N, C, h, w). The file's metadata says so too.

What a glocon prior does not hold, and what the state dicts carry instead:
- the classification head (ResNet ``fc``; Lite0 ``conv_head``, ``bn2``, ``classifier``) is never
  trained by glocon. The export carries the framework's own fresh initialisation of it, drawn with
  seed 0 (so the same prior always gives the same file), because strict loading needs every key.
  Replace or fine-tune it; never read it as trained. Zeros would be worse: a zero Lite0
  ``conv_head`` and ``classifier`` give each other zero gradients and never train.
- glocon's projection heads (``global_head``, ``local_head``) have no place in those models and
  are left out; ``--format onnx --map local_head`` exports the local head's map.
- the output stride: a state dict has none. A stock model runs at stride 32; a prior trained
  dilated (the demo's resnet18 runs at 16) loads the same weights, and the command prints how to
  rebuild its stride (glocon's ResNet rule dilates every 3x3 conv of a stage, the first block's
  too, which neither torchvision's ``replace_stride_with_dilation`` nor timm's ``output_stride``
  does; for Lite0 timm's ``output_stride`` is exactly glocon's).
- the input normalisation: torchvision / timm models take normalised inputs; the command prints
  the prior's statistics (ImageNet's for ResNets, (x - 127/255) / (128/255) for Lite0).

Every state dict export is loaded back into the target model with ``strict=True`` and its layer4
compared with the prior's (at stride 32) on a fixed input; every ONNX file is run by onnxruntime
and compared with ``dense_map``. A mismatch is an error and nothing is written. Writes are atomic
(``glocon.io``); the prior is read with ``torch.load(weights_only=True)`` (``glocon.safeload``).
"""

from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, get_args

import torch
from torch import nn

from glocon.errors import CheckpointError, ConfigError, GloconError, PreflightError
from glocon.io import atomic_open, atomic_write_bytes
from glocon.models.backbones import RESNET_DILATION, stride_of
from glocon.models.lite0 import NAME as LITE0, STAGE_LAYOUT as LITE0_STAGES, TIMM_ARCH as LITE0_TIMM
from glocon.models.prior import DENSE_ALIASES, EXPORT_FORMAT, DenseMap, PriorExtractor, export_arch, prior_from_export, read_export, with_output_stride

FORMATS = ("timm", "torchvision", "onnx")
DENSE_MAPS: tuple[str, ...] = get_args(DenseMap)
HEAD_SEED = 0  # the seed of the fresh classification head: the same prior gives the same file
ONNX_OPSET = 17  # onnxruntime reads it from 1.14 on; a low opset keeps other runtimes open
# The checks accept a max abs difference of TOLERANCE x max(1, the largest |feature|): a prior's maps
# reach tens, and float32 itself is ~1e-5 of that from exact arithmetic (a Lite0 map with values to
# 16: torch's float32 result is 1.0e-4 from float64's, onnxruntime's too), so an absolute 1e-4
# would refuse correct exports.
TOLERANCE = 1e-4
CHECK_SEED = 0
ONNX_CHECK_SHAPE = (2, 3, 96, 80)  # not the (1, 3, 64, 64) it is traced at: a size baked into the graph fails the check
STATE_CHECK_SHAPE = (1, 3, 64, 64)
ONNX_HINT = "pip install onnx onnxruntime"

# glocon backbone -> the name each framework builds it by; an arch missing here has no exact counterpart there
TORCHVISION_NAMES = {"resnet18": "resnet18", "resnet50": "resnet50", "resnet101": "resnet101"}
TIMM_NAMES = {"resnet18": "resnet18", "resnet50": "resnet50", "resnet101": "resnet101", LITE0: LITE0_TIMM}
# target keys a glocon backbone never holds: the classification head, filled with a fresh init
HEAD_PREFIXES = {"resnet": ("fc.",), LITE0: ("conv_head.", "bn2.", "classifier.")}


@dataclass
class Exported:
    """What ``export_prior`` wrote, and what it checked: the lines ``glocon export`` prints."""

    out: Path
    format: str
    what: str  # one line: the file and how to load it
    check: str  # one line: what was verified, with the difference measured
    notes: list[str] = field(default_factory=list)  # what a user must know to read the same features


# -- inputs -----------------------------------------------------------------------------------
def check_out_path(out: str | os.PathLike) -> Path:
    """OUT is a file in a folder that exists and can be written: checked before any work, so a typo
    costs nothing. The folder is not created (a misspelt folder should not silently appear)."""
    path = Path(out)
    parent = path.parent
    if path.is_dir():
        raise PreflightError(f"OUT {path}: is a folder, expected a file name (e.g. {path / 'prior.onnx'})")
    if not parent.exists():
        raise PreflightError(f"OUT {path}: folder {parent} does not exist (create it first)")
    if not parent.is_dir():
        raise PreflightError(f"OUT {path}: {parent} is a file, expected a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PreflightError(f"OUT {path}: folder {parent} is not writable")
    return path


def target_name(backbone: str, fmt: str) -> str:
    """The model name ``fmt`` builds ``backbone`` by; ``ConfigError`` when it has no exact counterpart."""
    names = {"timm": TIMM_NAMES, "torchvision": TORCHVISION_NAMES}[fmt]
    if backbone not in names:
        other = [f for f in ("timm", "torchvision") if f != fmt and backbone in {"timm": TIMM_NAMES, "torchvision": TORCHVISION_NAMES}[f]]
        instead = f"--format {other[0]} or --format onnx" if other else "--format onnx"
        raise ConfigError(
            f"backbone {backbone!r} has no exact {fmt} counterpart (glocon exports {fmt}: {', '.join(sorted(names))}); use {instead}"
        )
    return names[backbone]


# -- state dicts --------------------------------------------------------------------------------
RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")
# Lite0Backbone names a timm module path without its dots (``blocks.3`` -> ``blocks3``): glocon.models.lite0
_LITE0_PATHS = {path.replace(".", ""): path for paths in LITE0_STAGES.values() for path in paths}


def _resnet_key(key: str) -> str | None:
    """glocon ``stages.<stage>.*`` -> torchvision / timm ResNet name (the two share every key).
    glocon's stem is ``Sequential(conv1, bn1, relu, maxpool)``; the layers keep their names."""
    stage, _, rest = key.removeprefix("stages.").partition(".")
    if stage == "stem":
        index, _, leaf = rest.partition(".")
        module = {"0": "conv1", "1": "bn1"}.get(index)
        return f"{module}.{leaf}" if module else None
    return f"{stage}.{rest}" if stage in RESNET_STAGES else None


def _lite0_key(key: str) -> str | None:
    """glocon ``stages.<stage>.<module>.*`` -> timm ``tf_efficientnet_lite0`` name."""
    parts = key.split(".", 3)
    if len(parts) < 4 or parts[0] != "stages" or parts[2] not in _LITE0_PATHS:
        return None
    return f"{_LITE0_PATHS[parts[2]]}.{parts[3]}"


def family(backbone: str) -> str:
    return LITE0 if backbone == LITE0 else "resnet"


def map_backbone(backbone: str, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The glocon backbone's state dict (``stages.*``) in the target framework's names; raises on any key it cannot place."""
    rename: Callable[[str], str | None] = _lite0_key if backbone == LITE0 else _resnet_key
    out: dict[str, torch.Tensor] = {}
    unplaced = []
    for key, tensor in state.items():
        name = rename(key)
        if name is None:
            unplaced.append(key)
        else:
            out[name] = tensor
    if unplaced:
        raise CheckpointError(f"{backbone}: {len(unplaced)} backbone keys have no target name: {unplaced[:5]}")
    return out


def fill_head(mapped: Mapping[str, torch.Tensor], fresh: Mapping[str, torch.Tensor], head: tuple[str, ...], what: str) -> dict[str, torch.Tensor]:
    """Every key of the fresh target model, in its order: the prior's tensors where it has them, the
    fresh ones for the classification head only. Anything else left over (a key in neither, a
    shape that differs) is a mapping bug, so it raises rather than pass a half-loaded model."""
    unexpected = sorted(set(mapped) - set(fresh))
    shapes = [f"{k}: {tuple(mapped[k].shape)} vs {tuple(fresh[k].shape)}" for k in mapped if k in fresh and mapped[k].shape != fresh[k].shape]
    missing = sorted(k for k in fresh if k not in mapped and not k.startswith(head))
    overlap = sorted(k for k in mapped if k.startswith(head))
    if unexpected or shapes or missing or overlap:
        raise CheckpointError(
            f"{what}: the prior's weights do not fit ({len(unexpected)} unexpected {unexpected[:5]}, {len(missing)} missing {missing[:5]}, "
            f"{len(shapes)} shape mismatches {shapes[:5]}, {len(overlap)} in the head {overlap[:5]})"
        )
    return {k: (mapped[k] if k in mapped else fresh[k]).detach().clone().contiguous() for k in fresh}


def build_target(fmt: str, name: str) -> nn.Module:
    """A fresh ``fmt`` model ``name`` (random init, never downloaded), drawn with ``HEAD_SEED``
    without touching the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(HEAD_SEED)
        if fmt == "torchvision":
            import torchvision

            return getattr(torchvision.models, name)(weights=None)
        import timm

        return timm.create_model(name, pretrained=False)


def target_layer4(model: nn.Module, fmt: str, x: torch.Tensor) -> torch.Tensor:
    """The target model's last stage (glocon's layer4) for a normalised input."""
    if fmt == "torchvision":  # conv1, bn1, relu, maxpool, layer1..4 (then avgpool, fc)
        return nn.Sequential(*list(model.children())[:-2])(x)
    # timm's feature index 4 is layer4 for its ResNets and blocks.6 (320 ch, /32) for Lite0
    return model.forward_intermediates(x, indices=[4], intermediates_only=True)[0]


def compare(want: torch.Tensor, got: torch.Tensor) -> tuple[float, float]:
    """(max abs difference, the most the checks allow for ``want``); inf when the shapes differ."""
    limit = TOLERANCE * max(1.0, float(want.abs().max()))
    return (float((want - got).abs().max()) if want.shape == got.shape else float("inf")), limit


def fixed_images(shape: tuple[int, ...]) -> torch.Tensor:
    """The checks' input: RGB in [0, 1], the same on every run."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(CHECK_SEED))


def state_dict_export(prior: PriorExtractor, fmt: str) -> tuple[dict[str, torch.Tensor], str, str]:
    """(state dict, target name, check line): the prior's backbone in ``fmt``'s names with a fresh
    head, loaded back strictly into a fresh target and its layer4 compared with the prior's at
    stride 32 (a stock model's stride); raises ``CheckpointError`` when they differ."""
    backbone = prior.arch.backbone
    name = target_name(backbone, fmt)
    model = build_target(fmt, name)
    what = f"{fmt} {name}"
    state = fill_head(map_backbone(backbone, prior.backbone.state_dict()), model.state_dict(), HEAD_PREFIXES[family(backbone)], what)
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.random.fork_rng(devices=[]):  # rebuilding at stride 32 draws a random init (then overwritten): not the caller's draws
        stock = with_output_stride(prior, 32)
    images = fixed_images(STATE_CHECK_SHAPE)
    with torch.no_grad():
        want = stock.dense_map(images, "backbone")
        got = target_layer4(model, fmt, stock.normalize(images))
    diff, limit = compare(want, got)
    if not diff <= limit:
        raise CheckpointError(f"{what}: its layer4 differs from the prior's by {diff:.2e} (> {limit:.1e}; shapes {tuple(got.shape)} vs {tuple(want.shape)}); nothing written")
    check = f"check: loads strict=True into {_loader(fmt, name)}; its layer4 matches the prior's at stride 32 to {diff:.1e} (max abs diff) on a fixed 64 px input"
    return state, name, check


def _loader(fmt: str, name: str) -> str:
    return f"torchvision.models.{name}()" if fmt == "torchvision" else f'timm.create_model("{name}")'


def state_dict_notes(prior: PriorExtractor, fmt: str, name: str) -> list[str]:
    """What a user of the state dict must do to read the features glocon reads."""
    arch, mean, std = prior.arch, prior.mean.flatten().tolist(), prior.std.flatten().tolist()
    head = ", ".join(p.rstrip(".") for p in HEAD_PREFIXES[family(arch.backbone)])
    notes = [
        f"input: RGB in [0, 1], normalised with mean ({', '.join(f'{v:.5g}' for v in mean)}) std ({', '.join(f'{v:.5g}' for v in std)}) before the model",
        f"head: {head} is {fmt}'s fresh init (seed {HEAD_SEED}), not trained: replace or fine-tune it; layer4 is the prior's",
    ]
    stride = stride_of(arch.dilated, arch.output_stride)
    if stride != 32 and family(arch.backbone) == LITE0:
        notes.append(f'stride: the prior runs at output stride {stride}: timm.create_model("{name}", output_stride={stride}) reads its map exactly (a stock model runs at 32)')
    elif stride != 32:
        rule = " and ".join(f"of {layer} dilation = padding = {d}" for layer, d in RESNET_DILATION[stride].items())
        notes.append(
            f"stride: the prior runs at output stride {stride}, a stock {name} at 32; for glocon's map give every 3x3 conv {rule} "
            "and stride 1, and the downsample convs there stride 1 (README's \"Using a glocon prior elsewhere\" shows how); "
            "--format onnx keeps the stride"
        )
    if arch.prior_source == "local_head":
        notes.append(f"map: this prior's map is its {arch.proj_dim}-d local head, which a {fmt} model lacks; layer4 is the 'backbone' map (--format onnx exports the prior map)")
    return notes


# -- ONNX ---------------------------------------------------------------------------------------
class DenseMapModule(nn.Module):
    """``prior.dense_map(images, which)`` as a module with one tensor in and one out, for tracing."""

    def __init__(self, prior: PriorExtractor, which: str) -> None:
        super().__init__()
        self.prior = prior
        self.which = which

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.prior.dense_map(images, self.which)


def _onnx_modules() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise ConfigError(f"--format onnx needs onnx and onnxruntime: {ONNX_HINT} ({exc})") from None
    return onnx, onnxruntime


def onnx_bytes(prior: PriorExtractor, which: str) -> bytes:
    """The ONNX model of ``dense_map(images, which)``: batch, height and width dynamic, metadata that
    says what goes in and comes out.

    torch's TorchScript exporter (``dynamo=False``): it traces in seconds, needs nothing beyond
    torch, and keeps Lite0's TF "SAME" padding dynamic in H and W. The dynamo exporter needs
    onnxscript and took 7 minutes on Lite0 (its padding's symbolic shapes) for the same graph.
    """
    onnx, _ = _onnx_modules()
    module = DenseMapModule(prior, which).eval()
    buf = io.BytesIO()
    # the TorchScript exporter warns that it is deprecated (torch is pinned; the check below catches a change)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (fixed_images((1, 3, 64, 64)),), buf, dynamo=False, opset_version=ONNX_OPSET,
            input_names=["images"], output_names=["features"],
            dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}, "features": {0: "batch", 2: "h", 3: "w"}},
        )
    model = onnx.load_model_from_string(buf.getvalue())
    arch = prior.arch
    props = {
        "glocon.format": EXPORT_FORMAT,
        "glocon.arch": json.dumps(arch.model_dump(mode="json", exclude={"weights"}), sort_keys=True),
        "glocon.map": which,
        "glocon.output_stride": str(stride_of(arch.dilated, arch.output_stride)),
        "glocon.input": "images: float32 (N, 3, H, W), RGB in [0, 1]; the normalisation is inside the model",
    }
    onnx.helper.set_model_props(model, props)
    model.doc_string = f"glocon prior dense map {which!r} ({arch.backbone}, {prior.dense_channels(which)} channels)"
    onnx.checker.check_model(model)
    return model.SerializeToString()


def check_onnx(data: bytes, prior: PriorExtractor, which: str) -> float:
    """Run the ONNX model with onnxruntime on a fixed input of another size than it was traced at;
    the max abs difference from ``dense_map``, or ``CheckpointError`` above what ``compare`` allows."""
    _, ort = _onnx_modules()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # a tiny input: threads would only compete with the caller's work
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    images = fixed_images(ONNX_CHECK_SHAPE)
    with torch.no_grad():
        want = prior.dense_map(images, which).numpy()
    got = session.run(["features"], {"images": images.numpy()})[0]
    diff, limit = compare(torch.from_numpy(want), torch.from_numpy(got))
    if not diff <= limit:
        raise CheckpointError(
            f"ONNX export of {prior.arch.backbone} map {which!r}: onnxruntime differs from dense_map by {diff:.2e} "
            f"(> {limit:.1e}; shapes {got.shape} vs {want.shape}); nothing written"
        )
    return diff


# -- the command ----------------------------------------------------------------------------------
def export_prior(prior_path: str | os.PathLike, fmt: str, out: str | os.PathLike, which: str | None = None) -> Exported:
    """Write ``prior_path`` as ``fmt`` to ``out`` (atomically, after its check passed).

    ``which`` (onnx only; default ``prior``) names the dense map (``DenseMap``). Raises
    ``ConfigError`` for a bad request (format, map, OUT, an arch ``fmt`` has no counterpart for)
    and ``CheckpointError`` for a file that is not a prior export.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if which is not None and fmt != "onnx":
        raise ConfigError(f"--map {which}: applies to --format onnx only (a {fmt} state dict holds the whole backbone)")
    which = which or "prior"
    which = DENSE_ALIASES.get(which, which)
    if which not in DENSE_MAPS:
        raise ConfigError(f"--map {which!r}: expected one of {', '.join(DENSE_MAPS)}")
    out = check_out_path(out)
    payload = read_export(prior_path)  # anything that is not a prior: CheckpointError naming the file
    arch = export_arch(payload, prior_path)
    if fmt != "onnx":
        target_name(arch.backbone, fmt)  # before building anything: an arch with no counterpart fails fast
    with torch.random.fork_rng(devices=[]):  # building draws a random init (then overwritten): not the caller's draws
        prior = prior_from_export(payload, prior_path).eval().requires_grad_(False)  # frozen, as load_prior_extractor gives it
    if fmt == "onnx":
        data = onnx_bytes(prior, which)
        diff = check_onnx(data, prior, which)
        atomic_write_bytes(out, data)
        stride = stride_of(arch.dilated, arch.output_stride)
        what = (
            f"wrote {out}: ONNX (opset {ONNX_OPSET}) of {arch.backbone}'s dense map {which!r} ({prior.dense_channels(which)} ch, output stride {stride}); "
            'input "images" float32 (N, 3, H, W) RGB in [0, 1], normalisation inside; output "features"'
        )
        check = f"check: onnxruntime matches glocon's dense_map to {diff:.1e} (max abs diff) on a fixed {ONNX_CHECK_SHAPE} input"
        return Exported(out, fmt, what, check)
    sd, name, check = state_dict_export(prior, fmt)
    with atomic_open(out, "wb") as fh:
        torch.save(sd, fh)
    what = f"wrote {out}: {fmt} state dict ({len(sd)} tensors): m = {_loader(fmt, name)}; m.load_state_dict(torch.load({str(out)!r}, weights_only=True))"
    return Exported(out, fmt, what, check, state_dict_notes(prior, fmt, name))


def exit_code(exc: GloconError) -> int:
    """2 for a request that cannot work (usage, config, OUT), 1 for an input file that is not a prior."""
    return 2 if isinstance(exc, ConfigError) else 1
