"""``memo``: run a frozen encoder on a batch through the store, computing only the rows it lacks.

Row ``i`` of the inputs is one image (and its support mask, where the encoder reads one); its
key is the digest of exactly those rows (``tensor_digest``). The rows the store lacks are encoded
in one batch, stored one entry per row, and the result is assembled in the caller's order, on the
caller's device. With eval-mode BatchNorm an image's features do not depend on its batchmates,
so a stored row equals a recomputed one to float rounding (~1e-6: a batch of another size can
take another convolution path).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from glocon.featstore.store import FeatureStore, tensor_digest, weights_digest

Encoder = Callable[..., Mapping[str, torch.Tensor]]


def memo(store: FeatureStore | None, ns: str | None, encode: Encoder, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """``encode(*inputs)`` (a dict of (B, ...) tensors), through ``store``; without a store, just
    ``encode(*inputs)``."""
    if store is None or ns is None:
        return dict(encode(*inputs))
    n = len(inputs[0])
    device = inputs[0].device
    keys = [tensor_digest(*(x[i] for x in inputs)) for i in range(n)]
    found: dict[str, dict[str, torch.Tensor]] = {}
    todo: list[int] = []  # the first row of each key the store lacks
    for i, key in enumerate(keys):
        if key in found or keys.index(key) != i:
            continue
        got = store.get(ns, key)
        if got is None:
            todo.append(i)
        else:
            found[key] = {name: torch.from_numpy(a.copy()) for name, a in got.items()}
    if todo:
        idx = torch.tensor(todo, device=device)
        out = encode(*(x.index_select(0, idx) for x in inputs))
        for j, i in enumerate(todo):
            row = {name: t[j].detach().float().cpu() for name, t in out.items()}
            store.put(ns, keys[i], {name: t.numpy() for name, t in row.items()})
            found[keys[i]] = row
    store.flush_stats()
    names = list(found[keys[0]])
    return {name: torch.stack([found[k][name] for k in keys]).to(device) for name in names}


@dataclass(frozen=True)
class Slot:
    """One encoder output's place in the store, for code that encodes one input at a time (the bank):
    the namespace is digested once, not per image."""

    store: FeatureStore
    ns: str

    def __call__(self, encode: Encoder, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return memo(self.store, self.ns, encode, *inputs)


def slot(store: FeatureStore | None, model: torch.nn.Module, output: str, frozen_only: bool = True) -> Slot | None:
    """The ``Slot`` of ``model``'s ``output`` in ``store`` (None without a store)."""
    return Slot(store, store.namespace(weights_digest(model, frozen_only), output)) if store is not None else None


class StoredEncoders:
    """A split model's ``encode_query`` / ``encode_support`` through the store.

    A model may declare how each splits into frozen parts with weights of their own
    (``store_parts() -> {method: [(name, fn, module, key)]}``; QGNet: F's layers and the prior's map):
    each part is then stored under its own namespace (``module``'s weights, ``key``), so rows that
    differ in one part (another prior, no prior) still read the others (F's features). Without a
    declaration the whole method is one part, keyed by the model's frozen weights."""

    METHODS = ("encode_query", "encode_support")

    def __init__(self, store: FeatureStore | None, model: torch.nn.Module) -> None:
        m = getattr(model, "module", model)
        self.store = store
        self.parts: dict[str, list[tuple[Encoder, str | None]]] = {}
        declared = m.store_parts() if store is not None and hasattr(m, "store_parts") else {}
        digest = weights_digest(m) if store is not None and set(self.METHODS) - set(declared) else None
        for method in self.METHODS:
            if store is None:
                self.parts[method] = [(getattr(m, method), None)]
            elif method in declared:
                self.parts[method] = [
                    (fn, store.namespace(weights_digest(module, frozen_only=False), f"{method}:{name}", **key)) for name, fn, module, key in declared[method]
                ]  # fmt: skip
            else:
                self.parts[method] = [(getattr(m, method), store.namespace(digest, method))]

    def __call__(self, method: str, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for fn, ns in self.parts[method]:
            out.update(memo(self.store, ns, fn, *inputs))
        return out
