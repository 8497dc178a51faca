"""Shard sets: samples by key (``glocon.data.shardindex.ShardIndex``), the manifest's class index as
a filter, and a small cache of decoded samples (a page asks for the same sample several times)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from glocon.data.shardindex import ShardIndex
from glocon.data.schema import Sample
from glocon.errors import DataError
from glocon.explore.folders import ExploreError, Folders


class ShardSets:
    def __init__(self, folders: Folders, cache: int = 256) -> None:
        self.folders = folders
        self.capacity = cache
        self._indexes: dict[str, ShardIndex] = {}
        self._samples: OrderedDict[tuple[str, str], Sample] = OrderedDict()
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return list(self.folders.named["shards"])

    def index(self, name: str) -> ShardIndex:
        """The set's index (headers scanned once); a missing or damaged manifest is a 404 naming it."""
        path = self.folders.path("shards", name)
        with self._lock:
            if name not in self._indexes:
                try:
                    self._indexes[name] = ShardIndex(path)
                except DataError as exc:
                    raise ExploreError(404, f"shards set {name!r}: {exc}") from None
            return self._indexes[name]

    def sample(self, name: str, key: str) -> Sample:
        """A decoded sample; an unknown key is a 404 naming the set and its folder."""
        index = self.index(name)
        if key not in index:
            raise ExploreError(404, f"sample key {key!r} is not in shards set {name!r} ({index.manifest.root}); pick one from /shards/{name}")
        with self._lock:
            hit = self._samples.get((name, key))
            if hit is not None:
                self._samples.move_to_end((name, key))
                return hit
        sample = index.get(key)
        with self._lock:
            self._samples[(name, key)] = sample
            while len(self._samples) > self.capacity:
                self._samples.popitem(last=False)
        return sample

    def sample_at(self, shard: str, key: str) -> tuple[str, Sample]:
        """(set name, sample) for a sample a bank names by shard path; the shard must lie in a set."""
        name = self.folders.name_of("shards", shard)
        if name is None:
            raise ExploreError(409, f"shard {shard} is in none of the explorer's shards sets ({', '.join(self.names()) or 'none'})")
        return name, self.sample(name, key)

    def listing(self, name: str, cls: int | None = None, offset: int = 0, limit: int = 60) -> dict[str, Any]:
        """Keys of the set (or of the samples the manifest indexes under class ``cls``), a page of them."""
        index = self.index(name)
        classes = {int(c): len(keys) for c, keys in index.class_index.items()}
        if cls is not None and cls not in classes:
            raise ExploreError(404, f"class {cls} is not in the class index of shards set {name!r} (it has {sorted(classes)})")
        keys = index.keys() if cls is None else sorted(index.class_index[cls])
        return {
            "shards": name, "root": str(Path(index.manifest.root)), "total": len(keys), "offset": offset,
            "keys": keys[offset : offset + limit], "classes": classes, "class": cls,
        }
