"""``proto``: the training-free baseline head (masked-average prototype + cosine + threshold).

It is PANet's non-parametric step (Wang et al., ICCV 2019, ``kaixin96/PANet``, ``models/fewshot.py``:
``getFeatures`` = masked average pooling of the support features upsampled to the mask,
``calDist`` = cosine similarity x 20, prototypes averaged over shots) reduced to one foreground
prototype and a threshold. ``mode="fg_bg"`` keeps PANet's foreground + background prototypes
and takes the argmax instead.

It reads the features of any prior extractor export (``source="prior"``, the default: this is
how sweeps score a freshly pretrained prior cheaply) or of a plain backbone (``source="backbone"``).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from glocon.plugin_api import (
    IGNORE_INDEX,
    ConfigError,
    GloconModel,
    Plugin,
    PriorExtractor,
    Row,
    build_backbone,
    encode_images,
    load_prior_extractor,
    masked_average,
    min_max_normalize,
    resize,
    with_output_stride,
)

EPS = 1e-7


class ProtoConfig(GloconModel):
    source: Literal["prior", "backbone"] = "prior"
    # prior_features: P_q as the export defines it; local_head: the dense 128-d head; layerN: a backbone stage
    # (with source=prior, the extractor's own names: glocon.models.prior.DenseMap)
    layer: Literal["prior_features", "local_head", "layer2", "layer3", "layer4"] = "prior_features"
    prior_path: str | None = None  # used when build_model gets no prior and source="prior"
    backbone: str = "resnet50"  # source="backbone" only
    backbone_weights: str | None = None  # local file or package:<name>; None = random init
    dilated: bool = False
    # the stride features are read at, for source="prior" too (a prior's weights read at another
    # stride, glocon.models.prior.with_output_stride): baselines compared at one feature resolution
    output_stride: int | None = None
    mode: Literal["threshold", "fg_bg"] = "threshold"
    normalize: bool = True  # min-max normalise the cosine map per query (as Eq. 12) before thresholding
    threshold: float = 0.5  # foreground where the (normalised) cosine exceeds it
    scale: float = 20.0  # PANet multiplies cosines by 20 before the softmax


def masked_average_pool(feats: torch.Tensor, masks: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """feats (N, C, h, w), masks (N, 1, H, W) in [0, 1] -> prototypes (N, C) = sum(f * m) / (sum(m) + eps).

    PANet upsamples the features to the mask; we area-downsample the mask to the features
    instead, which equals pooling nearest-upsampled features and costs C*h*w, not C*H*W. Unlike
    a bilinear resize of the mask, a small object never vanishes between sampling points.
    eps (PANet: 1e-5) keeps an empty mask finite.
    """
    if tuple(masks.shape[-2:]) != tuple(feats.shape[-2:]):
        masks = F.interpolate(masks, size=feats.shape[-2:], mode="area")
    return masked_average(feats, masks, eps)


def prototype_similarity(feats: torch.Tensor, proto: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Cosine between every position of feats (B, C, h, w) and its image's prototype (B, C) -> (B, h, w)."""
    dots = (feats * proto[:, :, None, None]).sum(dim=1)
    sim: torch.Tensor = dots / (feats.norm(dim=1) * proto.norm(dim=1)[:, None, None] + eps)
    return sim


class ProtoSegmenter(nn.Module):
    """The segmenter interface of ``glocon.plugins``; no trainable parameter."""

    mean: torch.Tensor  # ImageNet normalisation of the backbone's input (buffers)
    std: torch.Tensor

    def __init__(self, cfg: ProtoConfig, prior: PriorExtractor | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.prior: PriorExtractor | None = None
        self.backbone: nn.Module | None = None
        if cfg.source == "prior":
            if prior is None:
                if not cfg.prior_path:
                    raise ConfigError("proto: source='prior' needs a prior extractor (give one to build_model or set prior_path)")
                prior = load_prior_extractor(cfg.prior_path)
            self.prior = with_output_stride(prior, cfg.output_stride)
            module: nn.Module = prior
        else:
            if cfg.layer in ("prior_features", "local_head"):
                raise ConfigError(f"proto: layer={cfg.layer!r} needs source='prior'; a backbone offers layer2, layer3, layer4")
            self.backbone = build_backbone(cfg.backbone, cfg.dilated, cfg.backbone_weights, cfg.output_stride)
            module = self.backbone
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)
        if self.backbone is not None:  # F's own input statistics (ImageNet for ResNets, Lite's for EfficientNet-Lite)
            mean, std = self.backbone.input_stats()
            self.register_buffer("mean", mean, persistent=False)
            self.register_buffer("std", std, persistent=False)

    def train(self, mode: bool = True) -> "ProtoSegmenter":
        super().train(mode)
        for m in (self.prior, self.backbone):
            if m is not None:
                m.eval()  # never update BatchNorm statistics: this head is training-free
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return []

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, C, h, w) from the configured source and layer."""
        layer = self.cfg.layer
        if self.prior is not None:
            return self.prior.dense_map(images, layer)
        assert self.backbone is not None
        feats: torch.Tensor = self.backbone((images - self.mean) / self.std, upto=layer)[layer]
        return feats

    # -- frozen encoders, then the training-free head (glocon.fewshot.encoded encodes each image once)
    @torch.no_grad()
    def encode_query(self, query: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": self.features(query)}

    @torch.no_grad()
    def encode_support(self, images: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features of support images (N, 3, H, W) and their masks (N, H, W): 1 object, 0
        background, 255 neither."""
        feats = self.features(images)
        # area-downsampled to the features here, once, as masked_average_pool would per episode
        fg = F.interpolate((masks == 1).to(images.dtype).unsqueeze(1), size=feats.shape[-2:], mode="area")
        bg = F.interpolate((masks == 0).to(images.dtype).unsqueeze(1), size=feats.shape[-2:], mode="area")
        return {"features": feats, "fg": fg, "bg": bg}

    def encoder_key(self) -> dict[str, Any]:
        """What the features depend on; threshold, mode, scale and normalize act on them after."""
        head = {"threshold", "mode", "scale", "normalize"}
        return {k: v for k, v in self.cfg.model_dump().items() if k not in head}

    @torch.no_grad()
    def forward(
        self,
        query: torch.Tensor | None = None,
        support_images: torch.Tensor | None = None,
        support_masks: torch.Tensor | None = None,
        *,
        encoded: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], tuple[int, int]] | None = None,
    ) -> dict[str, Any]:
        if encoded is None:
            assert query is not None and support_images is not None and support_masks is not None
            encoded = encode_images(self, query, support_images, support_masks)
        return self.head(*encoded)

    def head(self, q: dict[str, torch.Tensor], s: dict[str, torch.Tensor], size: tuple[int, int]) -> dict[str, Any]:
        cfg = self.cfg
        qf = q["features"]  # (B, C, h, w)
        b, k = s["features"].shape[:2]
        sf = s["features"].flatten(0, 1)  # (B*K, C, h', w')
        proto_fg = masked_average_pool(sf, s["fg"].flatten(0, 1)).view(b, k, -1).mean(dim=1)  # K-shot: average the prototypes
        sim_fg = prototype_similarity(qf, proto_fg)  # (B, h, w)
        if cfg.mode == "fg_bg":
            proto_bg = masked_average_pool(sf, s["bg"].flatten(0, 1)).view(b, k, -1).mean(dim=1)
            scores = torch.stack([prototype_similarity(qf, proto_bg), sim_fg], dim=1) * cfg.scale
        else:
            sim = min_max_normalize(sim_fg, EPS) if cfg.normalize else sim_fg
            # sigmoid(scale * (s - t)) is the foreground probability; argmax == (s > t)
            margin = (sim - cfg.threshold) * (cfg.scale / 2)
            scores = torch.stack([-margin, margin], dim=1)
        logits = resize(scores, tuple(size))
        return {"logits": logits, "guided_region_map": min_max_normalize(sim_fg, EPS).unsqueeze(1)}

    def loss(self, out: dict[str, Any], target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """CE with 255 ignored (reported only: nothing here trains)."""
        logits = out["logits"]
        if tuple(logits.shape[-2:]) != tuple(target.shape[-2:]):
            logits = resize(logits, target.shape[-2:])
        if not (target != IGNORE_INDEX).any():
            return logits.sum() * 0.0, {"loss": 0.0}
        loss = F.cross_entropy(logits, target.long(), ignore_index=IGNORE_INDEX)
        return loss, {"loss": float(loss)}


IMAGENET = ("model.source=backbone", "model.backbone=efficientnet_lite0", "model.backbone_weights=package:efficientnet_lite0", "model.layer=layer3", "model.output_stride=16")


class ProtoPlugin(Plugin):
    name = "proto"
    config_model = ProtoConfig
    trainable = False
    # training-free rows, read at stride 16, the stride the CPU few-shot configs read QGNet's F and
    # prior at, so every row compares at one feature resolution: on F's own ImageNet features
    # (EfficientNet-Lite0, the demo's F) and on the prior's
    variants = {
        "proto-imagenet": Row(IMAGENET, None),
        "proto-prior": Row(("model.output_stride=16",)),
        # the same on F's features with its threshold and mode chosen on base-val (the fair bar)
        "proto-imagenet-tuned": Row(IMAGENET, None, tune=True),
    }
    # the threshold and mode chosen on base-val episodes (glocon.fewshot.choose): the "-tuned" rows
    base_val_choices = (
        *((f"model.threshold={t}", "model.mode=threshold") for t in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)),
        ("model.mode=fg_bg",),
    )
    description = "training-free baseline: masked-average support prototype, cosine, threshold (PANet's non-parametric step)"

    def build_model(self, cfg: GloconModel, prior: PriorExtractor | None = None) -> ProtoSegmenter:
        return ProtoSegmenter(ProtoConfig.model_validate(self.make_config(cfg)), prior)


plugin = ProtoPlugin()
