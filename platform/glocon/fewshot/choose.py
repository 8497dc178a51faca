"""Choose a training-free plugin's settings on base classes, the way a trained head's recipe is
chosen (issue 23): every candidate override set of ``Plugin.base_val_choices`` is scored by the
sweep objective (``glocon.fewshot.objective``: seeded validation episodes of the fold's base
classes, on fit-split images that hold no novel class) and the best one is kept. The eval split
and the novel classes are never read, so the tuned baseline is as fair a bar as the trained head.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from glocon.config import apply_overrides
from glocon.fewshot.config import FewShotConfig
from glocon.featstore import open_store
from glocon.fewshot.encoded import EncodedEval
from glocon.fewshot.objective import objective

if TYPE_CHECKING:  # annotations only
    from glocon.fewshot.episodes import EpisodeSource
    from glocon.plugins import Plugin


def with_overrides(cfg: FewShotConfig, overrides: Sequence[str]) -> FewShotConfig:
    """``cfg`` with dotted ``key=value`` overrides applied and validated again."""
    return apply_overrides(cfg, overrides, "base-val choice")


def choose_on_base_val(plugin: Plugin, cfg: FewShotConfig, source: EpisodeSource | None = None) -> dict[str, Any]:
    """{"chosen": the best override set, "scores": [(overrides, base-val mIoU %)], "episodes", "shots"}.
    A plugin with no ``base_val_choices`` keeps its config (``chosen`` is empty)."""
    choices = [tuple(c) for c in getattr(plugin, "base_val_choices", ())]
    if not choices:
        return {"chosen": [], "scores": [], "episodes": 0, "shots": cfg.objective.shots}
    features = EncodedEval(open_store(cfg.store))  # choices that change only the head share their encoded images
    scores = [(list(c), objective(plugin, cfg.prior, with_overrides(cfg, c), source, features)) for c in choices]
    best = max(scores, key=lambda s: s[1])  # the first of equals: the order the plugin lists them
    return {"chosen": best[0], "scores": scores, "episodes": cfg.objective.episodes, "shots": cfg.objective.shots}
