"""QGNet (paper Sec. IV-B, Fig. 2): feature extractor F + prior extractor F_p + region maps + category guider + FEM.

What comes from where:
- PFENet (``dvlab-research/PFENet``, ``model/PFENet.py``): the frozen backbone with dilated
  layer3 / layer4 (all 3x3 convs dilated 2 and 4, stride 1), bridge features
  cat(layer3, layer2) -> 1x1 conv to 256 + ReLU + Dropout2d(0.5) (``down_query`` / ``down_supp``),
  the category guider (Weighted_GAP), the training-free prior mask from layer4 (our guided
  region map: the support's layer4 is computed on layer3 * mask and masked again), the K-shot
  mean of prototypes and of maps, and the FEM decoder.
- The QGNet release (``liuweide01/QGNet-Few-shot-segmentation``, ``model/PFENet_QGNet.py``):
  the prior region map is computed after a *learned* 3x3 conv to 256 (+ ReLU + Dropout2d(0.5))
  on both sides: ``down_learn_super`` on the frozen backbone's layer4 of the query and
  ``down_learn_unsuper`` on the prior extractor's features. The paper's Eq. 9 speaks of the
  bridge features; ``prior_map_query="bridge"`` uses cat(layer3, layer2) instead of layer4.
  The map then enters FEM as one more channel next to PFENet's prior mask.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from glocon.plugin_api import (
    IGNORE_INDEX,
    Backbone,
    ConfigError,
    GloconModel,
    PriorExtractor,
    build_backbone,
    dilate_resnet_,
    encode_images,
    load_prior_extractor,
    resize,
    with_output_stride,
)

from glocon_qgnet.fem import FEM, PFENET_BINS, PFENET_FEATURE_SIZE
from glocon.plugin_api import EPS, category_guider, guided_region_map, k_shot_average, prior_region_map


class QGNetConfig(GloconModel):
    """The QGNet plugin's model config (the few-shot runner supplies data, episodes and schedule)."""

    backbone: Literal["resnet50", "resnet18", "resnet101", "vgg16_bn", "efficientnet_lite0"] = "resnet50"
    # local state-dict file, package:<name>, or "prior": F starts from the loaded prior extractor's
    # backbone (same architecture) -- the offline stand-in for ImageNet weights when none are
    # installed; None = random init. Never downloaded.
    backbone_weights: str | None = None
    dilated: bool = True  # PFENet: dilated layer3/4, output stride 8
    reduce_dim: int = 256  # PFENet's reduce_dim
    bins: tuple[float, ...] = PFENET_BINS  # > 1: absolute at bins_reference; <= 1: fraction of the feature size
    bins_reference: int | None = PFENET_FEATURE_SIZE  # None: absolute bins, exactly as PFENet
    use_prior_map: bool = True  # ablation: False removes the prior branch and its FEM channel
    use_guided_map: bool = True  # ablation: False removes the guided map and its FEM channel
    # The layer the guided map reads (PFENet: layer4, at stride 8 in its dilated ResNet). With an
    # undilated F, layer4 is at stride 32 (a 4 x 4 grid at 128 px) and carries little for it;
    # issue 23 measured it alone on novel episodes: layer4 15.0 mIoU, layer3 43.1.
    guided_map_layer: Literal["layer3", "layer4"] = "layer4"
    # "oracle" replaces the guided map by the query's ground truth at the map's grid: a diagnostic
    # that the decoder reads its maps (bench/fewshot_table.py's oracle_map_gain), never a result.
    guided_map_source: Literal["features", "oracle"] = "features"
    # Dropout2d after the bridge / prior reductions (PFENet's down_query / down_supp, the release's
    # down_learn_*: 0.5) and in the classifiers (PFENet's cls / inner_cls: 0.1). Set for 200 epochs
    # at 60 x 60 maps; on 8 x 8 maps for ~1000 steps 0.5 stalls the fit (docs/protocol.md).
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    cls_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    # The region maps (in [0, 1]) enter FEM's merge beside the bridge features and the guider; a
    # backbone whose features are large (EfficientNet-Lite0's stages are signed, std 7-8) drowns
    # them there. The maps are multiplied by this before the merge (PFENet / the release: 1).
    map_scale: float = Field(1.0, gt=0.0)
    # prior export to load when build_model gets no prior. The "global-only / local-only prior"
    # ablation is an export pretrained with only L_global or only L_local, named here.
    prior_path: str | None = None
    prior_source: Literal["export", "backbone", "local_head"] = "export"  # which F_p output is P_q
    prior_map_query: Literal["layer4", "bridge"] = "layer4"  # release: layer4; paper text: bridge features
    prior_conv_dim: int = 256  # the release's learned 3x3 conv width before Eq. 9
    # the stride the prior's map is read at: the release dilates its prior like PFENet's F (output
    # stride 8, 60 x 60 at 473 px); None keeps the export's own stride
    prior_output_stride: int | None = 8
    # PFENet calls model.train() on the whole model, so its frozen backbone's BatchNorm uses batch
    # statistics and keeps updating its running ones during fit (train.py); "eval" freezes them.
    # Train-mode features depend on the batch, so the fit cache needs "eval".
    backbone_bn: Literal["eval", "train"] = "eval"
    eps: float = EPS  # Eq. 12
    aux_weight: float = 1.0  # PFENet: loss = main + 1.0 * mean(aux per bin)

    @field_validator("bins")
    @classmethod
    def _bins_positive(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or any(b <= 0 for b in v):
            raise ValueError(f"bins must be a non-empty list of positive sizes, got {list(v)}")
        return v


def pfenet_dilate_(backbone: Backbone) -> Backbone:
    """Dilate a ResNet's layer3 / layer4 in place as PFENet does (output stride 8); the one rule is
    the platform's ``dilate_resnet_``, which the prior extractor uses too."""
    return dilate_resnet_(backbone, 8)


def build_feature_extractor(name: str, weights: str | None, dilated: bool) -> Backbone:
    """Frozen feature extractor F: stages layer1..layer4, eval mode, no gradients."""
    # resnets dilate by PFENet's rule, vgg16_bn drops the pools of layer3/4, efficientnet_lite0
    # dilates its last stages itself (timm output_stride=8): all inside build_backbone
    backbone = build_backbone(name, dilated=dilated, weights=weights)
    backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    return backbone


def _down(cin: int, cout: int, k: int, dropout: float) -> nn.Sequential:
    # PFENet down_query/down_supp (k=1) and the release's down_learn_* (k=3): conv, ReLU, Dropout2d (PFENet: 0.5)
    return nn.Sequential(nn.Conv2d(cin, cout, kernel_size=k, padding=k // 2, bias=False), nn.ReLU(inplace=True), nn.Dropout2d(p=dropout))


def _resize(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    return resize(x, size)  # one rule for every resize (glocon.ops: why not align_corners)


class QGNet(nn.Module):
    """forward(query (B, 3, H, W) in [0, 1], support_images (B, K, 3, H', W'), support_masks (B, K, H', W'))
    -> {"logits": (B, 2, H, W), "aux_logits": [...], "prior_region_map"?: (B, 1, h, w), "guided_region_map"?: (B, 1, h, w)}
    with (h, w) the bridge-feature size (input / 8 with the dilated backbone)."""

    # the dense maps forward returns beside the logits: the evaluator scores them against the masks
    # and draws them in Fig. 5 (it knows no map by name)
    region_maps = ("prior_region_map", "guided_region_map")
    mean: torch.Tensor  # ImageNet normalisation of F's input (buffers)
    std: torch.Tensor

    def __init__(self, cfg: QGNetConfig, prior: PriorExtractor | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        from_prior = cfg.backbone_weights == "prior"
        self.backbone = build_feature_extractor(cfg.backbone, None if from_prior else cfg.backbone_weights, cfg.dilated)
        if from_prior:
            self._copy_prior_backbone(prior)
        ch = self.backbone.channels
        fea_dim = ch["layer3"] + ch["layer2"]
        self.down_query = _down(fea_dim, cfg.reduce_dim, 1, cfg.dropout)
        self.down_supp = _down(fea_dim, cfg.reduce_dim, 1, cfg.dropout)
        self.prior: PriorExtractor | None = None
        if cfg.use_prior_map:
            if prior is None:
                raise ConfigError("QGNet: use_prior_map=true needs a prior extractor (give one to build_model or set prior_path)")
            prior = with_output_stride(prior, cfg.prior_output_stride)
            self.prior = prior
            prior.eval()
            for p in prior.parameters():
                p.requires_grad_(False)
            query_dim = ch["layer4"] if cfg.prior_map_query == "layer4" else fea_dim
            self.down_bridge_prior = _down(query_dim, cfg.prior_conv_dim, 3, cfg.dropout)  # release: down_learn_super
            self.down_prior = _down(self._prior_channels(prior), cfg.prior_conv_dim, 3, cfg.dropout)  # release: down_learn_unsuper
        n_maps = int(cfg.use_prior_map) + int(cfg.use_guided_map)
        self.fem = FEM(cfg.reduce_dim, n_maps, cfg.bins, cfg.bins_reference, classes=2, cls_dropout=cfg.cls_dropout)
        mean, std = self.backbone.input_stats()  # F's own input statistics (ImageNet; Lite's for EfficientNet-Lite)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def _copy_prior_backbone(self, prior: PriorExtractor | None) -> None:
        if prior is None:
            raise ConfigError("QGNet: backbone_weights=prior needs a prior extractor (set prior / prior_path)")
        if prior.arch.backbone != self.cfg.backbone:
            raise ConfigError(
                f"QGNet: backbone_weights=prior needs the prior's backbone ({prior.arch.backbone}) to equal model.backbone ({self.cfg.backbone})"
            )
        # Dilation changes strides and padding only, so the parameter shapes match.
        self.backbone.load_state_dict(prior.backbone.state_dict())

    def _prior_channels(self, prior: PriorExtractor) -> int:
        return prior.dense_channels(self.cfg.prior_source)

    # -- frozen parts ---------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "QGNet":
        super().train(mode)
        frozen_bn_train = mode and self.cfg.backbone_bn == "train"
        self.backbone.train(frozen_bn_train)  # eval: frozen BatchNorm statistics; train: PFENet's batch statistics
        if self.prior is not None:
            self.prior.train(frozen_bn_train)
        return self

    @property
    def frozen_bn_in_train_mode(self) -> bool:
        return self.training and self.cfg.backbone_bn == "train"

    def fit_buffers(self) -> list[str]:
        """Buffers fit changes outside the trainable modules: with ``backbone_bn=train`` the frozen
        backbones' BatchNorm running statistics, which evaluation then uses."""
        if self.cfg.backbone_bn != "train":
            return []
        return [n for n, _ in self.named_buffers() if n.startswith(("backbone.", "prior.")) and n.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")]

    def trainable_parameters(self) -> list[nn.Parameter]:
        frozen = {id(p) for p in self.backbone.parameters()}
        if self.prior is not None:
            frozen |= {id(p) for p in self.prior.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in frozen]

    @torch.no_grad()
    def _extract(self, images: torch.Tensor, need_layer4: bool, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Frozen F on (N, 3, H, W) in [0, 1]. With ``mask`` (N, 1, H, W), layer4 reads layer3 * mask (PFENet's support path)."""
        stages = self.backbone.stages
        x = (images - self.mean) / self.std
        for name in ("stem", "layer1"):
            x = stages[name](x) if name in stages else x
        l2 = stages["layer2"](x)
        l3 = stages["layer3"](l2)
        out = {"layer2": _resize(l2, l3.shape[-2:]), "layer3": l3}  # PFENet's VGG branch resizes layer2 to layer3
        if mask is not None:
            out["mask"] = _resize(mask, l3.shape[-2:])
        if need_layer4:
            out["layer4"] = stages["layer4"](l3 * out["mask"] if mask is not None else l3)
        return out

    @torch.no_grad()
    def prior_features(self, query: torch.Tensor) -> torch.Tensor:
        """P_q = F_p(I_q) (Eq. 8), from the source the config names: (B, 3, H, W) -> (B, C_p, h_p, w_p)."""
        assert self.prior is not None
        return self.prior.dense_map(query, self.cfg.prior_source)

    # -- forward: frozen encoders, then the trained head ------------------------------------------
    @torch.no_grad()
    def encode_query(self, query: torch.Tensor) -> dict[str, torch.Tensor]:
        """Frozen features of query images (N, 3, H, W): F's layer2 (at layer3's size), layer3,
        layer4 when a map needs it, and the prior's P_q (Eq. 8) when the prior map is on."""
        cfg = self.cfg
        need_q4 = self._guided_reads_layer4 or (cfg.use_prior_map and cfg.prior_map_query == "layer4")
        out = self._extract(query, need_q4)
        if cfg.use_prior_map:
            out["prior"] = self.prior_features(query)
        return out

    @torch.no_grad()
    def encode_support(self, images: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Frozen features of support images (N, 3, H, W) with their masks (N, H, W) in {0, 1}:
        layer2, layer3, the mask at their size, and layer4 of layer3 x mask (PFENet's support path)."""
        return self._extract(images, self._guided_reads_layer4, mask=(masks == 1).to(images.dtype).unsqueeze(1))

    def encoder_key(self) -> dict[str, Any]:
        """What ``encode_query`` / ``encode_support`` depend on (the fit cache's key): F's config,
        which layers are read and whether the prior is; the head's keys (dropout, map_scale,
        reduce_dim, ...) are left out, so rows that differ only in the head share one cache."""
        cfg = self.cfg
        keys = ("backbone", "backbone_weights", "dilated", "use_prior_map", "prior_source", "prior_map_query", "prior_output_stride", "backbone_bn")
        return {**{k: getattr(cfg, k) for k in keys}, "layer4": self._guided_reads_layer4}

    def store_parts(self) -> dict[str, list[tuple[str, Any, nn.Module, dict[str, Any]]]]:
        """How the frozen encoders split for the feature store (``glocon.featstore.StoredEncoders``):
        F's layers and the prior's map are kept apart, so the rows that differ only in the prior
        (learned, untrained, Lite0's, none) compute F's features once between them. Each part is
        (name, fn, the module whose weights it reads, the config it also depends on)."""
        cfg = self.cfg
        need_q4 = self._guided_reads_layer4 or (cfg.use_prior_map and cfg.prior_map_query == "layer4")
        f_key = {"backbone": cfg.backbone, "dilated": cfg.dilated, "backbone_bn": cfg.backbone_bn}
        query: list[tuple[str, Any, nn.Module, dict[str, Any]]] = [("F", lambda x: self._extract(x, need_q4), self.backbone, {**f_key, "layer4": need_q4})]
        if cfg.use_prior_map:
            assert self.prior is not None
            query.append(("prior", lambda x: {"prior": self.prior_features(x)}, self.prior, {"prior_source": cfg.prior_source}))
        support: list[tuple[str, Any, nn.Module, dict[str, Any]]] = [("F", lambda imgs, masks: self.encode_support(imgs, masks), self.backbone, {**f_key, "layer4": self._guided_reads_layer4})]
        return {"encode_query": query, "encode_support": support}

    @property
    def _guided_reads_layer4(self) -> bool:
        cfg = self.cfg
        return cfg.use_guided_map and cfg.guided_map_source == "features" and cfg.guided_map_layer == "layer4"

    @property
    def wants_query_label(self) -> bool:
        """True for the oracle diagnostic only: forward then needs ``query_label``."""
        return self.cfg.use_guided_map and self.cfg.guided_map_source == "oracle"

    def forward(
        self,
        query: torch.Tensor | None = None,
        support_images: torch.Tensor | None = None,
        support_masks: torch.Tensor | None = None,
        *,
        encoded: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], tuple[int, int]] | None = None,
        query_label: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """From images, or from ``encoded = (query features (B, ...), support features (B, K, ...),
        output size)`` as the fit cache stores them: the same head either way. ``query_label``
        (B, H, W) in {0, 1, 255} is read by the oracle diagnostic only (``guided_map_source``)."""
        if encoded is None:
            assert query is not None and support_images is not None and support_masks is not None
            encoded = encode_images(self, query, support_images, support_masks)
        if self.wants_query_label:
            if query_label is None:
                raise ValueError("QGNet: guided_map_source='oracle' needs query_label")
            encoded = ({**encoded[0], "label": query_label}, encoded[1], encoded[2])
        return self.head(*encoded)

    def head(self, q: dict[str, torch.Tensor], s: dict[str, torch.Tensor], size: tuple[int, int]) -> dict[str, Any]:
        """The trained part: bridge and support reductions, category guider, region maps, FEM."""
        cfg = self.cfg
        b, k = s["layer3"].shape[:2]
        s = {n: t.flatten(0, 1) for n, t in s.items()}  # (B*K, ...)
        q_cat = torch.cat([q["layer3"], q["layer2"]], dim=1)
        bridge = self.down_query(q_cat)  # X_q: (B, 256, h, w)
        fsize = tuple(bridge.shape[-2:])
        supp = self.down_supp(torch.cat([s["layer3"], s["layer2"]], dim=1))  # X_s: (B*K, 256, h, w)
        guider = category_guider(supp, s["mask"])  # (B*K, 256, 1, 1)
        guider = k_shot_average(guider.view(b, k, *guider.shape[1:]))  # K-shot: mean prototype

        out: dict[str, Any] = {}
        maps: list[torch.Tensor] = []
        if cfg.use_prior_map:
            prior_feat = self.down_prior(q["prior"])
            query_feat = self.down_bridge_prior(q["layer4"] if cfg.prior_map_query == "layer4" else q_cat)
            prior_map = _resize(prior_region_map(query_feat, prior_feat, cfg.eps), fsize)  # Eq. (9)-(12)
            out["prior_region_map"] = prior_map
            maps.append(prior_map)
        if cfg.use_guided_map:
            with torch.no_grad():  # training-free, like PFENet's prior mask
                if cfg.guided_map_source == "oracle":
                    guided = oracle_map(q["label"], fsize)
                else:
                    layer = cfg.guided_map_layer
                    sl = s[layer].view(b, k, *s[layer].shape[1:])
                    s_mask = s["mask"].view(b, k, *s["mask"].shape[1:])
                    # one shot at a time, as PFENet: the (B, hw, h'w') cosine stays one shot's size
                    guided = k_shot_average([guided_region_map(q[layer], sl[:, i], s_mask[:, i], cfg.eps) for i in range(k)])
            out["guided_region_map"] = _resize(guided, fsize)
            maps.append(out["guided_region_map"])

        merged_maps = torch.cat(maps, dim=1) * cfg.map_scale if maps else None
        logits, aux = self.fem(bridge, guider, merged_maps)
        out["logits"] = _resize(logits, tuple(size))
        out["aux_logits"] = aux
        return out

    def loss(self, out: dict[str, Any], target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """PFENet's loss: CE(main) + aux_weight * mean over bins of CE(aux), 255 ignored, at the target's size."""
        return segmentation_loss(out, target, self.cfg.aux_weight)


def oracle_map(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The query's ground truth (B, H, W) in {0, 1, 255} as a map at ``size``: the object's share of
    each cell (area pooling; ignored pixels count as background) -> (B, 1, *size) in [0, 1]."""
    fg = (label == 1).to(torch.float32).unsqueeze(1)
    return F.adaptive_avg_pool2d(fg, size)


def segmentation_loss(out: dict[str, Any], target: torch.Tensor, aux_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """out["logits"] (B, 2, H, W) (+ out["aux_logits"]) vs target (B, H', W') long -> (total, {name: float})."""
    target = target.long()
    size = tuple(target.shape[-2:])
    logits = _resize(out["logits"], size)
    if not (target != IGNORE_INDEX).any():  # nothing to learn from; CE would be NaN
        zero = logits.sum() * 0.0
        return zero, {"loss": 0.0, "main_loss": 0.0, "aux_loss": 0.0}
    main = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
    aux_list = out.get("aux_logits") or []
    if aux_list:
        aux = torch.stack([F.cross_entropy(_resize(a, size), target, ignore_index=IGNORE_INDEX) for a in aux_list]).mean()
    else:
        aux = torch.zeros_like(main)
    total = main + aux_weight * aux
    return total, {"loss": float(total.detach()), "main_loss": float(main.detach()), "aux_loss": float(aux.detach())}


def build_qgnet(cfg: QGNetConfig, prior: PriorExtractor | None = None, device: str | torch.device = "cpu") -> QGNet:
    """QGNet from its config; loads ``cfg.prior_path`` when no prior is given and the prior map is on."""
    needs_prior = cfg.use_prior_map or cfg.backbone_weights == "prior"
    if needs_prior and prior is None:
        if not cfg.prior_path:
            raise ConfigError("qgnet: use_prior_map=true or backbone_weights=prior, but no prior extractor was given and prior_path is not set")
        prior = load_prior_extractor(cfg.prior_path, map_location=device)
    # The prior is kept (and frozen) only when the prior map is on; backbone_weights=prior copies from it either way.
    return QGNet(cfg, prior if needs_prior else None).to(device)
