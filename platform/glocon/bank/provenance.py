"""The provenance sidecar: one row per FAISS id saying where its vector came from.

Columns: id (the FAISS id, = row number), shard, key (the sample's key), superpixel (id in the
shard's label map of the bank's patch method), x0 y0 x1 y1 (pixel bbox, x1/y1 exclusive), area
(pixels), grid_area (feature-grid cells the pooling weighed), height/width of the image,
dominant_class (-1 without a mask) and dominant_frac. Stored as parquet (pyarrow).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from glocon.errors import DataError
from glocon.io import atomic_open

COLUMNS: dict[str, pa.DataType] = {
    "id": pa.int64(),
    "shard": pa.string(),
    "key": pa.string(),
    "superpixel": pa.int32(),
    "x0": pa.int32(),
    "y0": pa.int32(),
    "x1": pa.int32(),
    "y1": pa.int32(),
    "area": pa.int64(),
    "grid_area": pa.float32(),
    "height": pa.int32(),
    "width": pa.int32(),
    "dominant_class": pa.int32(),
    "dominant_frac": pa.float32(),
}


def concat(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Column dicts of several images/shards -> one column dict (ids are set by ``with_ids``)."""
    names = [c for c in COLUMNS if c != "id"]
    if not parts:
        return {c: np.zeros(0, dtype=object if COLUMNS[c] == pa.string() else np.int64) for c in names}
    return {c: np.concatenate([np.asarray(p[c]) for p in parts]) for c in names}


def with_ids(columns: Mapping[str, np.ndarray], start: int = 0) -> dict[str, np.ndarray]:
    n = len(next(iter(columns.values()))) if columns else 0
    return {"id": np.arange(start, start + n, dtype=np.int64), **columns}


def to_table(columns: Mapping[str, Any]) -> pa.Table:
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise DataError(f"provenance: columns {missing} missing (expected {list(COLUMNS)})")
    return pa.table({c: pa.array(np.asarray(columns[c]).tolist() if t == pa.string() else np.asarray(columns[c]), type=t) for c, t in COLUMNS.items()})


def write(path: str | os.PathLike, columns: Mapping[str, Any]) -> Path:
    table = to_table(columns)
    with atomic_open(path, "wb") as fh:
        pq.write_table(table, fh)
    return Path(path)


def read(path: str | os.PathLike) -> pa.Table:
    if not os.path.isfile(path):
        raise DataError(f"provenance table not found: {path} (expected the parquet file a bank build writes)")
    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise DataError(f"provenance table {path}: not readable parquet ({type(exc).__name__}: {exc})") from None
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"provenance table {path}: columns {missing} missing (expected {list(COLUMNS)})")
    # One chunk per column: take() on a multi-chunk table joins every chunk on each call (22 ms per
    # query on a 1M-row bank, against 0.4 ms after this one-off 0.2 s join; bench/explore.py).
    try:
        return table.combine_chunks()
    except pa.ArrowInvalid:  # a string column beyond 2 GB cannot be one chunk; keep the chunks
        return table


def rows(table: pa.Table, ids: Sequence[int]) -> list[dict[str, Any]]:
    """Rows for FAISS ids (ids are row numbers; a negative id, FAISS's 'no result', is skipped)."""
    ids = [int(i) for i in ids if int(i) >= 0]
    sub = table.take(pa.array(ids, type=pa.int64())) if ids else table.slice(0, 0)
    out = sub.to_pylist()
    for want, row in zip(ids, out):
        if row["id"] != want:
            raise DataError(f"provenance: row {want} holds id {row['id']}; the table is not keyed by row")
    return out
