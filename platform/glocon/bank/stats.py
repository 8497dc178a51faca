"""Bank quality: class purity of neighbours where masks exist.

purity(q) = |{n in top-k(q) : class(n) == class(q)}| / k, where class = a patch's dominant mask
class. Queries are bank patches with a known class; neighbours are taken among patches with a
known class (patches of unannotated images say nothing either way), and by default not from the
query's own image (its neighbours there would flatter any prior). Reported per class, overall
(mean over queries) and macro (mean over classes), beside the chance level a random prior would
get: the mean over queries of the share of bank patches of the query's class.
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


def bank_stats(cfg: StatsConfig) -> dict[str, Any]:
    if cfg.bank is None:
        raise ConfigError("bank stats: 'bank' is empty; expected the folder a bank build wrote")
    bank = open_bank(cfg.bank)
    result = purity(bank, cfg)
    out = Path(cfg.out) if cfg.out else bank.root / "stats.json"
    atomic_write_json(out, {**result, "config": cfg.model_dump(mode="json")})
    result["out"] = str(out)
    return result
