"""Base-val: held-out images of the fit split that decide when a fit has learned (issue 18).

A fit needs a signal that is not its own loss and that never looks at the novel classes. A
fraction of the fit split's images (``fit.val_fraction``) is held out *by image*: no training
episode reads them, as query or support. Base-val episodes draw their query and supports from
these held-out images only, on the base classes only (the images already hold no novel class:
``glocon.fewshot.episodes``, mode ``train``). Fit scores them every ``fit.eval_every`` steps
(the class mIoU of Eq. 14, at the training resolution), keeps the best weights and stops after
``fit.patience`` evaluations without a gain; the steps are capped by ``fit.steps``. A fixed set
of base-train episodes is scored beside them, so the curve shows the gap between what the head
memorises and what it generalises.

The novel classes, and the eval split's images, are read only by the final evaluation.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

import torch

from glocon.fewshot.episodefile import Episode
from glocon.fewshot.episodes import sample_episodes
from glocon.seeds import rng_for


class EpisodeTensors(Protocol):
    """Episodes as tensors by index, what ``score`` batches by hand (``glocon.fewshot.batches.TrainEpisodes``,
    ``glocon.fewshot.cache.CachedTrainEpisodes``): items carry ``index`` and ``target``."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]: ...


def held_out(keys: Sequence[str], fraction: float, seed: int) -> set[str]:
    """The images held out for base-val: each key independently, by a hash of (seed, key), so the
    split does not depend on which other images exist (adding data never moves a held-out image)."""
    if fraction <= 0:
        return set()
    cut = int(fraction * 2**32)
    return {k for k in keys if int.from_bytes(hashlib.sha256(f"baseval/{seed}/{k}".encode()).digest()[:4], "big") < cut}


class FixedEpisodes:
    """A fixed, seeded list of episodes, called by index like ``TrainEpisodeSampler``."""

    def __init__(self, pool: Mapping[int, Sequence[str]], shots: int, n: int, tag: str) -> None:
        self.pool = {int(c): list(k) for c, k in pool.items()}
        self.episodes: list[Episode] = sample_episodes(self.pool, shots, n, rng_for(tag)) if self.pool else []
        self.classes = sorted(self.pool)

    def __len__(self) -> int:
        return len(self.episodes)

    def __call__(self, index: int) -> Episode:
        return self.episodes[index]


@torch.no_grad()
def score(
    model: torch.nn.Module, dataset: EpisodeTensors, episodes: FixedEpisodes, forward: Callable[[torch.nn.Module, Mapping[str, torch.Tensor]], dict[str, Any]],
    batch_size: int = 8,
) -> dict[str, float]:  # fmt: skip
    """Class mIoU (Eq. 14) and FB-IoU (Eq. 15) of ``model`` on ``dataset`` (items carry ``index``
    into ``episodes`` and ``target`` at the training resolution), in eval mode; restores the mode."""
    from torch.utils.data import default_collate

    from glocon.fewshot.metrics import ClassIoUAccumulator, intersection_union
    from glocon.ops import resize

    was_training = model.training
    model.eval()
    acc = ClassIoUAccumulator(episodes.classes)
    try:
        # batches by hand, not a DataLoader: creating its iterator draws from the global RNG, and
        # an evaluation must not change the dropout masks of the steps after it
        for start in range(0, len(dataset), batch_size):
            batch = default_collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            logits = forward(model, batch)["logits"].float().cpu()
            target = batch["target"]
            pred = resize(logits, tuple(target.shape[-2:])).argmax(dim=1)
            for i, index in enumerate(batch["index"].tolist()):
                inter, union = intersection_union(pred[i], target[i])
                acc.add_counts(episodes(index).cls, inter, union)
    finally:
        model.train(was_training)
    return {"miou": acc.miou(), "fb_iou": acc.fb_iou()}


@dataclass
class Monitor:
    """Best-so-far on base-val and the patience count; its state goes into every fit checkpoint,
    so a resumed fit keeps its best weights, its curve and its count."""

    patience: int | None
    best_step: int = 0
    best_score: float = float("-inf")
    bad_evals: int = 0
    stopped: bool = False
    curve: list[dict[str, float]] = field(default_factory=list)  # one row per evaluation
    best_state: dict[str, torch.Tensor] | None = None

    def update(self, step: int, row: dict[str, float], state: Callable[[], dict[str, torch.Tensor]]) -> bool:
        """Record an evaluation at ``step``; keep ``state()`` if it is the best. True: stop now."""
        self.curve.append({"step": step, **row})
        val = row.get("base_val_miou")
        if val is None:
            return False
        if val > self.best_score:
            self.best_score, self.best_step, self.bad_evals = val, step, 0
            self.best_state = copy.deepcopy(state())
        else:
            self.bad_evals += 1
        self.stopped = self.patience is not None and self.bad_evals >= self.patience
        return self.stopped

    def state_dict(self) -> dict[str, Any]:
        return {
            "patience": self.patience, "best_step": self.best_step, "best_score": self.best_score, "bad_evals": self.bad_evals,
            "stopped": self.stopped, "curve": list(self.curve), "best_state": self.best_state,
        }  # fmt: skip

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | None, patience: int | None) -> "Monitor":
        if not state:
            return cls(patience)
        m = cls(patience, int(state["best_step"]), float(state["best_score"]), int(state["bad_evals"]), bool(state["stopped"]), list(state["curve"]))
        m.best_state = state.get("best_state")
        return m
