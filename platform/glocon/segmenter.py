"""The segmenter protocol: what a plugin's ``build_model`` returns, as a type the platform can check."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Segmenter(Protocol):
    """What ``Plugin.build_model`` returns (an ``nn.Module``; shapes in ``glocon.plugins``).

    ``region_maps`` names the (B, 1, h, w) maps in [0, 1] its forward returns beside the logits;
    evaluation scores each against the query's mask (``glocon.fewshot.evaluate``)."""

    region_maps: tuple[str, ...]

    def __call__(self, query: torch.Tensor, support_images: torch.Tensor, support_masks: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]: ...

    def loss(self, out: dict[str, torch.Tensor | list[torch.Tensor]], target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]: ...

    def trainable_parameters(self) -> list[torch.nn.Parameter]: ...


class SplitEncoders(Protocol):
    """A segmenter that splits its frozen encoders from its head (``glocon.plugins.encode_images``,
    the fit cache, evaluation's encode-once): features by name, per image."""

    def encode_query(self, query: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def encode_support(self, images: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]: ...


def region_maps_of(model: object) -> tuple[str, ...]:
    """The region maps a segmenter declares (none when it declares none)."""
    return tuple(str(n) for n in getattr(model, "region_maps", ()))
