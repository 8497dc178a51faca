"""Frozen features of evaluation images, computed once per evaluation (issue 19).

An evaluation scores every (fold, shot, seed) episode file with one frozen encoder: the same
val images recur as queries and supports across episodes, seeds and shot counts (3 seeds x 100
episodes x (1 + 1) and x (1 + 5) images draw from 200 images here). A model that splits its
frozen part from its head (``encode_query`` / ``encode_support`` and ``forward(encoded=...)``,
as the fit cache needs: ``glocon.fewshot.cache.can_cache``) is encoded once per query image and
once per (support image, class), and only its head runs per episode.

Eval images are deterministic (``eval_resize`` of the stored image), so a key names its input
exactly; the support path reads the class's mask (PFENet's layer4 of layer3 x mask), so support
features are keyed by (image, class). The store lives as long as one ``evaluate`` call and one
frozen model: ``EncodedEval.bind`` forgets everything when the frozen weights change. Under it,
the feature store (``glocon.featstore``) keeps them across evaluations, rows, seeds and processes:
what one evaluation encoded, the next one with the same frozen weights reads.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from glocon.featstore import FeatureStore, StoredEncoders, weights_digest
from glocon.fewshot.cache import can_cache


class EncodedEval:
    """Per-image frozen features for the episodes of one evaluation, on the model's device."""

    def __init__(self, store: FeatureStore | None = None) -> None:
        self.store = store
        self.encoders: StoredEncoders | None = None  # the bound model's encoders, through the store
        self.digest: str | None = None
        self.queries: dict[str, dict[str, torch.Tensor]] = {}
        self.supports: dict[tuple[str, int], dict[str, torch.Tensor]] = {}
        self.encoded_images = 0  # how many images went through the frozen encoders (a bench reads it)

    @staticmethod
    def applies(model: torch.nn.Module) -> bool:
        return can_cache(model)[0]

    def bind(self, model: torch.nn.Module) -> None:
        """Use ``model``'s encoders from now on; features of other frozen weights are dropped."""
        digest = weights_digest(model)
        if digest != self.digest:
            self.digest, self.queries, self.supports = digest, {}, {}
            self.encoders = StoredEncoders(self.store, model)

    @torch.inference_mode()
    def encode(self, model: torch.nn.Module, batch: Sequence[Any], device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], tuple[int, int]]:
        """``batch`` of ``EvalEpisode`` -> (query features (B, ...), support features (B, K, ...),
        output size): what ``forward(encoded=...)`` takes."""
        todo_q: dict[str, torch.Tensor] = {}
        todo_s: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}
        for e in batch:
            if e.episode.query not in self.queries:
                todo_q[e.episode.query] = e.query
            for j, key in enumerate(e.episode.supports):
                if (key, e.episode.cls) not in self.supports:
                    todo_s[(key, e.episode.cls)] = (e.supports[j], e.support_masks[j])
        if self.encoders is None:
            self.bind(model)
        assert self.encoders is not None
        if todo_q:
            feats = self.encoders("encode_query", torch.stack(list(todo_q.values())).to(device))
            for i, key in enumerate(todo_q):
                self.queries[key] = {n: t[i] for n, t in feats.items()}
        if todo_s:
            imgs, masks = zip(*todo_s.values())
            feats = self.encoders("encode_support", torch.stack(imgs).to(device), torch.stack(masks).to(device))
            for i, key in enumerate(todo_s):
                self.supports[key] = {n: t[i] for n, t in feats.items()}
        self.encoded_images += len(todo_q) + len(todo_s)
        qs = [self.queries[e.episode.query] for e in batch]
        ss = [[self.supports[(key, e.episode.cls)] for key in e.episode.supports] for e in batch]
        q = {n: torch.stack([f[n] for f in qs]) for n in qs[0]}
        s = {n: torch.stack([torch.stack([f[n] for f in shots]) for shots in ss]) for n in ss[0][0]}
        return q, s, tuple(batch[0].query.shape[-2:])
