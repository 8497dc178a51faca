"""The JSON (and PNG) API under the pages. ``/api/query`` returns what ``glocon bank query``
writes to hits.json for the same bank, key and point / box / superpixel, less its 'sheet' entry
(``/api/sheet`` draws that sheet)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import APIRouter, Query
from fastapi.responses import Response

from glocon.explore.folders import ExploreError
from glocon.explore.views import compose, display_scale, parse_overlays, png

if TYPE_CHECKING:  # annotations only
    from glocon.data.schema import Sample
    from glocon.explore.context import ExploreContext


def parse_box(text: str) -> tuple[int, int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise ExploreError(400, f"box {text!r}: expected four integers x0,y0,x1,y1 (x1, y1 exclusive)")
    return values  # type: ignore[return-value]


def parse_where(x: int | None, y: int | None, box: str | None, superpixel: int | None) -> dict[str, Any]:
    """The click as QueryConfig fields: point (x, y), box or superpixel; empty when none is given."""
    if (x is None) != (y is None):
        raise ExploreError(400, "a point needs both x and y")
    given = sum(v is not None for v in (x, box, superpixel))
    if given > 1:
        raise ExploreError(400, "give one of a point (x, y), a box or a superpixel")
    if x is not None:
        return {"point": (x, y)}
    if box is not None:
        return {"box": parse_box(box)}
    return {"superpixel": superpixel} if superpixel is not None else {}


def region_mask(sample: Sample, region: str | None) -> np.ndarray | None:
    """``slic:12`` / ``fh:3`` (a superpixel of that map) or ``box:x0,y0,x1,y1`` -> (H, W) bool."""
    if not region:
        return None
    kind, _, arg = region.partition(":")
    if kind in ("slic", "fh"):
        try:
            return sample.label_map(kind) == int(arg)
        except ValueError:
            raise ExploreError(400, f"region {region!r}: expected {kind}:<superpixel id>") from None
    if kind == "box":
        x0, y0, x1, y1 = parse_box(arg)
        mask = np.zeros(sample.image.shape[:2], bool)
        mask[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = True
        return mask
    raise ExploreError(400, f"region {region!r}: expected slic:<id>, fh:<id> or box:x0,y0,x1,y1")


def png_response(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})


def router(ex: ExploreContext) -> APIRouter:
    r = APIRouter(prefix="/api")
    _sample_routes(r, ex)
    _bank_routes(r, ex)
    _eval_routes(r, ex)
    return r


def _sample_routes(r: APIRouter, ex: ExploreContext) -> None:
    @r.get("/shards")
    def shards() -> list[dict[str, Any]]:
        out = []
        for name in ex.shardsets.names():
            try:
                info = ex.shardsets.listing(name, limit=0)
                out.append({"name": name, "root": info["root"], "samples": info["total"], "classes": info["classes"]})
            except ExploreError as exc:
                out.append({"name": name, "error": str(exc)})
        return out

    @r.get("/shards/{name}")
    def shard_samples(name: str, cls: int | None = None, offset: int = Query(0, ge=0), limit: int = Query(60, ge=0, le=10_000)) -> dict:
        return ex.shardsets.listing(name, cls, offset, limit)

    @r.get("/sample")
    def sample(shards: str, key: str) -> dict[str, Any]:
        s = ex.shardsets.sample(shards, key)
        h, w = s.image.shape[:2]
        return {"shards": shards, "key": s.key, "shard": s.shard, "height": h, "width": w, "classes": s.classes, "has_mask": s.mask is not None}

    @r.get("/image")
    def image(shards: str, key: str, overlay: str = "", region: str | None = None, size: int | None = Query(None, ge=16, le=4096)) -> Response:
        """The sample with overlays (mask, slic, fh); ``size``: a thumbnail's longest side."""
        s = ex.shardsets.sample(shards, key)
        h, w = s.image.shape[:2]
        scale = 1 if size is not None else display_scale(h, w, ex.cfg.display)
        return png_response(png(compose(s, parse_overlays(overlay), region_mask(s, region), scale), size))


def _bank_routes(r: APIRouter, ex: ExploreContext) -> None:
    @r.get("/banks")
    def banks() -> list[dict[str, Any]]:
        return [ex.banks.summary(n) for n in ex.banks.names()]

    @r.get("/query")
    def query(bank: str, key: str, shards: str | None = None, x: int | None = None, y: int | None = None,
              box: str | None = None, superpixel: int | None = None, k: int | None = Query(None, ge=1, le=1000)) -> dict:
        where = parse_where(x, y, box, superpixel)
        return ex.banks.query(bank, key, shards, k=k, **where)

    @r.get("/sheet")
    def sheet(bank: str, key: str, shards: str | None = None, x: int | None = None, y: int | None = None,
              box: str | None = None, superpixel: int | None = None, k: int | None = Query(None, ge=1, le=1000)) -> Response:
        return png_response(ex.banks.sheet_png(bank, key, shards, k=k, **parse_where(x, y, box, superpixel)))

    @r.get("/tile")
    def tile(bank: str, id: int, size: int | None = Query(None, ge=16, le=1024)) -> Response:
        return png_response(ex.banks.tile_png(bank, id, size or ex.cfg.tile))


def _eval_routes(r: APIRouter, ex: ExploreContext) -> None:
    @r.get("/evals")
    def evals() -> list[dict[str, Any]]:
        return [ex.evals.summary(n) for n in ex.evals.names()]

    @r.get("/eval/{name}/episodes")
    def episodes(name: str, fold: int, shots: int) -> dict[str, Any]:
        es = ex.evals.episodes(name, fold, shots)
        return {"eval": name, "fold": fold, "shots": shots, "classes": es.classes, "episodes": [e.to_json() for e in es.episodes]}

    @r.get("/eval/{name}/row")
    def row(name: str, fold: int, shots: int, index: int) -> dict[str, Any]:
        return ex.evals.row(name, fold, shots, index)[0]

    @r.get("/eval/{name}/row.png")
    def row_png(name: str, fold: int, shots: int, index: int) -> Response:
        return png_response(ex.evals.row(name, fold, shots, index)[1])
