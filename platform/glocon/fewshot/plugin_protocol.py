"""What the few-shot runner needs from a plugin, as a structural type.

``glocon.plugins.Plugin`` sits above the runner (its ``fit`` / ``evaluate`` / ``objective``
delegate to ``glocon.fewshot.runner``), so the runner's modules cannot name it without an import
cycle. ``FewShotPlugin`` describes the part of it they use; every ``Plugin`` satisfies it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # annotations only: nothing here is imported at run time
    from torch import nn

    from glocon.config import GloconModel
    from glocon.models.prior import PriorExtractor


class FewShotPlugin(Protocol):
    """A few-shot head as the runner sees it: its name, whether it trains, and how it validates
    its model config and builds its segmenter (``glocon.plugins.Plugin``'s interface)."""

    @property
    def name(self) -> str: ...

    @property
    def trainable(self) -> bool: ...

    def make_config(self, data: dict[str, Any] | GloconModel | None = None, source: str | None = None) -> GloconModel: ...

    def build_model(self, cfg: GloconModel, prior: PriorExtractor | None = None) -> nn.Module: ...
