"""Bank quality: class purity of neighbours where masks exist.

purity(q) = |{n in top-k(q) : class(n) == class(q)}| / k, where class = a patch's dominant mask
class. Queries are bank patches with a known class; neighbours are taken among patches with a
known class (patches of unannotated images say nothing either way), and by default not from the
query's own image (its neighbours there would flatter any prior). Reported per class, overall
(mean over queries) and macro (mean over classes), beside the chance level a random prior would
get: the mean over queries of the share of bank patches of the query's class.

Random queries follow the patches, so a bank that is mostly background (262 of 300 random
queries in the demo, issue 11) reports a figure that is mostly background's. ``balanced_purity``
draws the same number of queries from every class instead, reports background apart, and gives
the macro purity over object classes beside its chance level (the mean share of each class among
the candidates). ``bank stats`` reports both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from glocon.bank.config import StatsConfig
from glocon.bank.index import search
from glocon.bank.store import Bank, open_bank
from glocon.errors import ConfigError
from glocon.io import atomic_write_json


def known_classes(bank: Bank, cfg: StatsConfig) -> np.ndarray:
    """(N,) int: each patch's dominant class, -1 where unknown (no mask, ignored class, or too mixed)."""
    cls = bank.table.column("dominant_class").to_numpy().astype(np.int64).copy()
    frac = bank.table.column("dominant_frac").to_numpy()
    cls[(frac < cfg.min_dominant_frac) | np.isin(cls, cfg.ignore_classes)] = -1
    return cls


def purity(bank: Bank, cfg: StatsConfig) -> dict[str, Any]:
    cls = known_classes(bank, cfg)
    keys = bank.table.column("key").to_numpy(zero_copy_only=False)
    candidates = np.flatnonzero(cls >= 0)
    if len(candidates) == 0:
        return {"queries": 0, "overall": None, "macro": None, "chance": None, "per_class": {}, "note": "no patch has a known class (no masks?)"}
    rng = np.random.default_rng(cfg.seed)
    queries = np.sort(rng.choice(candidates, min(cfg.queries, len(candidates)), replace=False))
    max_per_image = int(np.max(bank.table.column("superpixel").to_numpy())) + 1
    # Search deep enough that k known-class neighbours from other images remain after filtering.
    k_search = min(bank.count, cfg.k + 1 + (max_per_image if cfg.exclude_same_image else 0) + cfg.k * 3)
    _, ids = search(bank.index, np.asarray(bank.vectors[queries]), k_search, cfg.nprobe if cfg.nprobe is not None else bank.manifest["nprobe"])
    share = {int(c): n / len(candidates) for c, n in zip(*np.unique(cls[candidates], return_counts=True))}
    values, found, per_class = [], [], {}
    for q, row in zip(queries, ids):
        row = row[(row >= 0) & (row != q)]
        row = row[cls[row] >= 0]
        if cfg.exclude_same_image:
            row = row[keys[row] != keys[q]]
        row = row[: cfg.k]
        if len(row) == 0:
            continue
        p = float(np.mean(cls[row] == cls[q]))
        values.append(p)
        found.append(len(row))
        per_class.setdefault(int(cls[q]), []).append(p)
    names = bank.class_names
    table = {
        str(c): {"name": names.get(c, str(c)), "queries": len(v), "purity": float(np.mean(v)), "chance": share[c]}
        for c, v in sorted(per_class.items())
    }
    chance = float(np.mean([share[int(cls[q])] for q in queries]))
    return {
        "k": cfg.k,
        "queries": len(values),
        "mean_neighbours": float(np.mean(found)) if found else 0.0,
        "overall": float(np.mean(values)) if values else None,
        "macro": float(np.mean([t["purity"] for t in table.values()])) if table else None,
        "chance": chance,
        "per_class": table,
        "factory": bank.manifest["factory"],
        "exclude_same_image": cfg.exclude_same_image,
    }


def balanced_purity(
    vectors: np.ndarray,
    classes: np.ndarray,
    groups: np.ndarray,
    *,
    k: int,
    per_class: int,
    seed: int = 0,
    background: int | None = 0,
    names: dict[int, str] | None = None,
) -> dict[str, Any]:
    """Purity@k with ``per_class`` seeded queries from every class.

    vectors (N, D) L2-normalised; classes (N,) int, -1 = unknown (never a query nor a neighbour);
    groups (N,): the image of each vector (neighbours from the query's own image are skipped).
    Returns the per-class table, ``macro`` over object classes (every class but ``background``),
    its ``chance`` (the mean over those classes of their share of the candidates) and
    ``background`` apart. Exact search (FAISS inner product).
    """
    from glocon.bank.config import IndexConfig
    from glocon.bank.index import build_index

    names = names or {}
    known = np.flatnonzero(classes >= 0)
    if len(known) == 0:
        return {"k": k, "queries": 0, "macro": None, "chance": None, "background": None, "per_class": {}, "note": "no vector has a known class"}
    rng = np.random.default_rng(seed)
    counts = dict(zip(*np.unique(classes[known], return_counts=True)))
    queries = np.concatenate([np.sort(rng.choice(np.flatnonzero(classes == c), min(per_class, int(n)), replace=False)) for c, n in sorted(counts.items())])
    index = build_index(vectors[known], "IDMap,Flat", IndexConfig(gpu="never"), ids=known.astype(np.int64))
    per_group = int(np.max(np.unique(groups, return_counts=True)[1]))
    k_search = min(len(known), k + 1 + per_group + 3 * k)
    _, ids = search(index, np.asarray(vectors[queries]), k_search)
    table: dict[int, list[float]] = {}
    for q, row in zip(queries, ids):
        row = row[(row >= 0) & (row != q)]
        row = row[groups[row] != groups[q]][:k]
        if len(row):
            table.setdefault(int(classes[q]), []).append(float(np.mean(classes[row] == classes[q])))
    share = {int(c): int(n) / len(known) for c, n in counts.items()}
    per_class = {
        str(c): {"name": names.get(c, str(c)), "queries": len(v), "purity": float(np.mean(v)), "chance": share[c]} for c, v in sorted(table.items())
    }
    objects = [c for c in table if c != background]
    return {
        "k": k,
        "queries": int(sum(len(v) for v in table.values())),
        "macro": float(np.mean([np.mean(table[c]) for c in objects])) if objects else None,
        "chance": float(np.mean([share[c] for c in objects])) if objects else None,
        "object_classes": len(objects),
        "background": per_class.get(str(background)) if background is not None else None,
        "per_class": per_class,
    }


def bank_stats(cfg: StatsConfig) -> dict[str, Any]:
    if cfg.bank is None:
        raise ConfigError("bank stats: 'bank' is empty; expected the folder a bank build wrote")
    bank = open_bank(cfg.bank)
    result = purity(bank, cfg)
    keys = bank.table.column("key").to_numpy(zero_copy_only=False)
    result["balanced"] = balanced_purity(
        np.asarray(bank.vectors), known_classes(bank, cfg), keys, k=cfg.k, per_class=cfg.per_class, seed=cfg.seed,
        background=cfg.background_class, names=bank.class_names,
    )  # fmt: skip
    out = Path(cfg.out) if cfg.out else bank.root / "stats.json"
    atomic_write_json(out, {**result, "config": cfg.model_dump(mode="json")})
    result["out"] = str(out)
    return result
