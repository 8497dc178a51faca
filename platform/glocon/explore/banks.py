"""Opened banks: a click's hits through ``glocon.bank.query.answer`` (the function ``glocon bank
query`` answers with), hit tiles and contact sheets through ``glocon.bank.render``.

A bank is opened once (index, provenance, prior) and kept; its query defaults are the ``query:``
section of the ``config.resolved.yaml`` its build wrote, the same defaults ``glocon bank query
--config <bank>/config.resolved.yaml`` would use. Before answering, the sample is checked to be the
very sample the bank embedded (same shard file), so a bank built from other shards is named as such.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glocon.bank.config import BankConfig, QueryConfig
from glocon.bank.provenance import rows
from glocon.bank.query import answer, class_name, hit_tile, load_bank_prior, query_tile
from glocon.bank.render import HIT_OUTLINE, render_tile, sheet_image
from glocon.bank.store import Bank, open_bank
from glocon.config import RESOLVED_NAME, load_config, validate_config
from glocon.data.schema import Sample
from glocon.device import pick_device
from glocon.errors import GloconError
from glocon.explore.folders import ExploreError, Folders
from glocon.explore.shardsets import ShardSets


@dataclass
class OpenBank:
    name: str
    bank: Bank
    model: Any
    device: Any
    defaults: QueryConfig
    shard_sets: list[str]  # the explorer's shards sets the bank was built from
    lock: threading.Lock = field(default_factory=threading.Lock)


def query_defaults(root: str) -> QueryConfig:
    """The ``query:`` section of the bank's own resolved config (QueryConfig() when it has none)."""
    path = Path(root) / RESOLVED_NAME
    return load_config(BankConfig, path).query if path.is_file() else QueryConfig()


class Banks:
    def __init__(self, folders: Folders, shardsets: ShardSets, device: str = "cpu", k: int | None = None) -> None:
        self.folders, self.shardsets, self.k = folders, shardsets, k
        self.device = pick_device(device)
        self._open: dict[str, OpenBank] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return list(self.folders.named["banks"])

    def get(self, name: str) -> OpenBank:
        """The opened bank (opened on first use; a failure is reported and retried next time)."""
        path = self.folders.path("banks", name)
        with self._lock:
            if name not in self._open:
                try:
                    self._open[name] = self._load(name, path)
                except ExploreError:
                    raise
                except GloconError as exc:
                    raise ExploreError(404, f"bank {name!r}: {exc}") from None
            return self._open[name]

    def _load(self, name: str, path: str) -> OpenBank:
        bank = open_bank(path)
        sets = []
        for shard in bank.manifest["shards"]:
            owner = self.folders.name_of("shards", shard)
            if owner is None:
                raise ExploreError(
                    409,
                    f"bank {name!r} ({path}) was built from shards outside the explorer's shards sets: {shard} "
                    f"(sets: {', '.join(f'{n}={p}' for n, p in self.folders.named['shards'].items()) or 'none'}); "
                    "add that shard folder to 'shards' in the explorer config, or pick a bank built from a configured set",
                )
            if owner not in sets:
                sets.append(owner)
        defaults = query_defaults(path)
        self.folders.require(defaults.prior or bank.manifest["prior"]["path"], f"bank {name!r}: prior")
        model = load_bank_prior(bank, defaults.prior, defaults.allow_other_prior, self.device)
        bank.index  # read the index now: the first click should not pay for it
        return OpenBank(name, bank, model, self.device, defaults, sets)

    def config_for(self, ob: OpenBank, **where: Any) -> QueryConfig:
        """The bank's query defaults with this click's key and point / box / superpixel."""
        data = ob.defaults.model_dump()
        data.update(bank=str(ob.bank.root), image=None, out=None, point=None, box=None, superpixel=None)
        if self.k is not None:
            data["k"] = self.k
        data.update({k: v for k, v in where.items() if v is not None})
        return validate_config(QueryConfig, data, source=f"query of bank {ob.name!r}")

    def check_sample(self, ob: OpenBank, shards: str, key: str) -> Sample:
        """The key's sample, which must be one this bank embedded, read from the same shard file."""
        index = self.shardsets.index(shards)
        if key not in index:
            self.shardsets.sample(shards, key)  # raises the 404 that names the set
        shown = Path(index.shard_of(key)).resolve()
        row = ob.bank.row_of_key(key)
        if row is None and shards not in ob.shard_sets:
            raise ExploreError(
                409,
                f"bank {ob.name!r} was built from other shards (sets {', '.join(ob.shard_sets)}), not from shards set {shards!r}: "
                f"sample {key!r} is not in it; pick a bank built from {shards!r}",
            )
        if row is None:
            m = ob.bank.manifest
            limit = m.get("config", {}).get("limit")
            raise ExploreError(
                404,
                f"sample {key!r} is not in bank {ob.name!r}: the bank holds {m['counts']['images']} images of shards set {shards!r}"
                + (f" (built with limit={limit})" if limit else ""),
            )
        held = Path(ob.bank.table.column("shard")[row].as_py()).resolve()
        if held != shown:
            raise ExploreError(409, f"bank {ob.name!r} was built from other shards: its sample {key!r} comes from {held}, the one shown from {shown}")
        return self.shardsets.sample(shards, key)

    def bank_sample(self, ob: OpenBank, key: str) -> Sample:
        """The key's sample from the shard the bank's provenance names (no shards set given)."""
        row = ob.bank.row_of_key(key)
        if row is None:
            raise ExploreError(404, f"sample {key!r} is not in bank {ob.name!r} ({ob.bank.root}, {ob.bank.manifest['counts']['images']} images)")
        return self.shardsets.sample_at(ob.bank.table.column("shard")[row].as_py(), key)[1]

    def _answer(self, name: str, key: str, shards: str | None, where: dict[str, Any]) -> tuple[OpenBank, QueryConfig, dict, Any]:
        ob = self.get(name)
        sample = self.check_sample(ob, shards, key) if shards is not None else self.bank_sample(ob, key)
        cfg = self.config_for(ob, key=key, **where)
        with ob.lock:  # one search at a time per bank: faiss's nprobe is set on the shared index
            result, patch = answer(cfg, ob.bank, ob.model, ob.device, sample=sample)
        return ob, cfg, result, patch

    def query(self, name: str, key: str, shards: str | None = None, **where: Any) -> dict[str, Any]:
        """What hits.json holds for this click, less its 'sheet' entry (the explorer writes no file)."""
        return self._answer(name, key, shards, where)[2]

    def sheet_png(self, name: str, key: str, shards: str | None = None, **where: Any) -> bytes:
        """The contact sheet ``glocon bank query`` writes as sheet.png, for the same click."""
        ob, cfg, result, patch = self._answer(name, key, shards, where)
        tiles = [hit_tile(ob.bank, h, self.shardsets.sample_at(h["shard"], h["key"])[1]) for h in result["hits"]]
        image, _ = sheet_image(query_tile(patch, result["query"]), tiles, cfg.tile, cfg.columns)
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()

    def row(self, name: str, vector_id: int) -> dict[str, Any]:
        ob = self.get(name)
        if not 0 <= vector_id < ob.bank.count:
            raise ExploreError(404, f"bank {name!r}: vector id {vector_id} out of range [0, {ob.bank.count})")
        row = rows(ob.bank.table, [vector_id])[0]
        row["class_name"] = class_name(ob.bank.class_names, row["dominant_class"])
        return row

    def tile_png(self, name: str, vector_id: int, size: int) -> bytes:
        """One hit's tile (its superpixel outlined on a crop), as the contact sheet draws it."""
        ob = self.get(name)
        row = self.row(name, vector_id)
        _, sample = self.shardsets.sample_at(row["shard"], row["key"])
        tile = render_tile(hit_tile(ob.bank, row, sample), size, HIT_OUTLINE)
        buf = io.BytesIO()
        tile.save(buf, format="PNG", compress_level=1)
        return buf.getvalue()

    def summary(self, name: str) -> dict[str, Any]:
        """What the index page says about a bank, read from its manifest only (cheap, no index)."""
        import json

        path = Path(self.folders.path("banks", name)) / "manifest.json"
        if not path.is_file():
            return {"name": name, "error": f"no bank at {path.parent} (manifest.json missing; run glocon bank build)"}
        m = json.loads(path.read_text(encoding="utf-8"))
        return {
            "name": name, "root": str(path.parent), "count": m.get("count"), "dim": m.get("dim"), "factory": m.get("factory"),
            "images": m.get("counts", {}).get("images"), "prior": m.get("prior", {}).get("path"),
            "patch_method": m.get("patch_method"), "embedding": m.get("embedding"),
            "shard_sets": sorted({n for s in m.get("shards", []) if (n := self.folders.name_of("shards", s))}),
        }
