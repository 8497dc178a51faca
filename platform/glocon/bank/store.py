"""The bank on disk: file names, the manifest, and ``open_bank`` which checks them together.

A bank folder holds ``manifest.json``, ``index.faiss``, ``provenance.parquet``, ``vectors.npy``
(the exact vectors, so a bank can be re-indexed or scored without re-embedding), optionally
``global.npy`` + ``images.parquet``, and ``config.resolved.yaml``. Every file is written
atomically; the manifest is written last, so a folder with a manifest is a finished bank.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from glocon.bank import provenance
from glocon.bank.index import read_index
from glocon.config import read_yaml
from glocon.errors import DataError
from glocon.io import atomic_open, atomic_write_json

FORMAT = "glocon.bank/v1"
MANIFEST = "manifest.json"
INDEX = "index.faiss"
PROVENANCE = "provenance.parquet"
VECTORS = "vectors.npy"
GLOBAL = "global.npy"
IMAGES = "images.parquet"


def save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    with atomic_open(path, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
    return Path(path)


def write_manifest(out: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    return atomic_write_json(Path(out) / MANIFEST, {"format": FORMAT, **manifest})


def read_manifest(bank: str | os.PathLike) -> dict[str, Any]:
    path = Path(bank) / MANIFEST
    if not path.is_file():
        raise DataError(f"bank manifest not found: {path} (expected a folder written by 'glocon bank build')")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DataError(f"bank manifest {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DataError(f"bank manifest {path}: expected format {FORMAT!r}, got {data.get('format') if isinstance(data, dict) else data!r}")
    return data


def load_class_names(path: str | None) -> dict[int, str]:
    """A YAML {id: name} mapping, or a file with a top-level ``classes:`` mapping (COCO128's config.yaml)."""
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise DataError(f"class_names file not found: {p} (expected YAML mapping class id -> name)")
    data = read_yaml(p, "class_names", DataError) or {}
    data = data.get("classes", data) if isinstance(data, dict) else data
    if not isinstance(data, dict):
        raise DataError(f"class_names {p}: expected a mapping of class id -> name")
    try:
        return {int(k): str(v) for k, v in data.items()}
    except (TypeError, ValueError):
        raise DataError(f"class_names {p}: expected integer class ids as keys") from None


@dataclass
class Bank:
    """An opened bank. ``index`` and ``vectors`` load on first use."""

    root: Path
    manifest: dict[str, Any]
    table: pa.Table
    _index: faiss.Index | None = field(default=None, repr=False)
    _vectors: np.ndarray | None = field(default=None, repr=False)

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def count(self) -> int:
        return int(self.manifest["count"])

    @property
    def index_path(self) -> Path:
        return self.root / self.manifest.get("files", {}).get("index", INDEX)

    @property
    def index(self) -> faiss.Index:
        if self._index is None:
            self._index = read_index(self.index_path, dim=self.dim, count=self.count)
        return self._index

    @property
    def vectors(self) -> np.ndarray:
        if self._vectors is None:
            path = self.root / VECTORS
            if not path.is_file():
                raise DataError(f"bank vectors not found: {path} (expected ({self.count}, {self.dim}) float32)")
            try:  # an object array, a pickle or a damaged header: named here, not as numpy's bare ValueError
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise DataError(f"bank vectors {path}: not a ({self.count}, {self.dim}) float32 .npy array ({exc})") from None
            if arr.dtype != np.float32:
                raise DataError(f"bank vectors {path}: dtype {arr.dtype}, expected float32")
            if arr.shape != (self.count, self.dim):
                raise DataError(f"bank vectors {path}: shape {arr.shape}, expected {(self.count, self.dim)}")
            self._vectors = arr
        return self._vectors

    def row_of_key(self, key: str) -> int | None:
        """The first provenance row of sample ``key`` (None when the bank does not hold it). A scan
        in Arrow, not a Python list: a 1M-row bank answers in milliseconds (bench/explore.py)."""
        row = pc.index(self.table.column("key"), key).as_py()
        return None if row is None or row < 0 else int(row)

    @property
    def class_names(self) -> dict[int, str]:
        return {int(k): v for k, v in self.manifest.get("class_names", {}).items()}


def open_bank(root: str | os.PathLike) -> Bank:
    root = Path(root)
    manifest = read_manifest(root)
    table = provenance.read(root / PROVENANCE)
    if table.num_rows != int(manifest["count"]):
        raise DataError(f"provenance table {root / PROVENANCE}: {table.num_rows} rows, expected {manifest['count']} (the manifest's count)")
    return Bank(root=root, manifest=manifest, table=table)
