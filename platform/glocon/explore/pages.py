"""Server-rendered pages (Jinja2 templates, autoescaped). They call what the API calls; a page's
own bad input becomes an ``ExploreError`` that the error handler shows in the page."""

from __future__ import annotations

import re

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.templating import Jinja2Templates

from glocon.errors import GloconError
from glocon.explore import files
from glocon.explore.api import parse_where
from glocon.explore.folders import ExploreError, safe_join
from glocon.explore.views import OVERLAYS, display_scale, parse_overlays

if TYPE_CHECKING:  # annotations only
    from glocon.explore.context import ExploreContext

    Render = Callable[..., HTMLResponse]  # router's render(request, template, status=200, **context)


def url(path: str, **params: Any) -> str:
    """``path?params``, dropping empty values (links keep only what the page needs)."""
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return f"{path}?{urlencode(kept)}" if kept else path


def default_bank(ex: ExploreContext, shards: str) -> str | None:
    """The first bank built from this shards set (else the first bank) for a sample page."""
    names = ex.banks.names()
    for n in names:
        if shards in ex.banks.summary(n).get("shard_sets", []):
            return n
    return names[0] if names else None


def where_params(where: dict[str, Any]) -> dict[str, Any]:
    """QueryConfig fields -> the API's query parameters."""
    if "point" in where:
        return {"x": where["point"][0], "y": where["point"][1]}
    if "box" in where:
        return {"box": ",".join(str(v) for v in where["box"])}
    return dict(where)


def ask(ex: ExploreContext, bank: str, shards: str, key: str, where: dict, k: int | None) -> dict[str, Any]:
    """One bank's panel on a sample page: its hits (with the links a hit needs) or its error."""
    params = {"bank": bank, "shards": shards, "key": key, "k": k, **where_params(where)}
    try:
        result = ex.banks.query(bank, key, shards, k=k, **where)
    except GloconError as exc:
        return {"bank": bank, "error": str(exc), "status": getattr(exc, "status", 400)}
    hits = []
    for h in result["hits"]:
        hits.append({**h, "shards_name": ex.folders.name_of("shards", h["shard"])})
    return {"bank": bank, "result": result, "hits": hits, "status": 200, "api": url("/api/query", **params), "sheet": url("/api/sheet", **params)}


def query_region(panel: dict[str, Any], ex: ExploreContext) -> str | None:
    """The outline to draw on the sample: the queried superpixel, or the box."""
    q = panel.get("result", {}).get("query")
    if not q:
        return None
    if q["kind"] == "box":
        return "box:" + ",".join(str(v) for v in q["box"])
    return f"{ex.banks.get(panel['bank']).bank.manifest['patch_method']}:{q['superpixel']}"


def router(ex: ExploreContext, templates: Jinja2Templates) -> APIRouter:
    r = APIRouter()

    def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, template, {"url": url, **context}, status_code=status)

    _browse_routes(r, ex, render)
    _eval_routes(r, ex, render)
    _file_routes(r, ex, render)
    return r


def _browse_routes(r: APIRouter, ex: ExploreContext, render: Render) -> None:
    """The index, a shards set's thumbnails, and a sample with its banks' answers."""

    @r.get("/", response_class=HTMLResponse)
    def index(request: Request):
        shards = []
        for name in ex.shardsets.names():
            try:
                info = ex.shardsets.listing(name, limit=0)
                shards.append({"name": name, "root": info["root"], "samples": info["total"], "classes": len(info["classes"])})
            except ExploreError as exc:
                shards.append({"name": name, "error": str(exc)})
        results = []
        for name, root in ex.folders.named["results"].items():
            try:
                results.append({"name": name, "root": root, "files": files.listing(Path(root), Path(root))})
            except ExploreError as exc:
                results.append({"name": name, "root": root, "error": f"{exc} (run the probe or sweep job that writes it)"})
        return render(request, "index.html", shards=shards, banks=[ex.banks.summary(n) for n in ex.banks.names()],
                      evals=[ex.evals.summary(n) for n in ex.evals.names()], results=results)

    @r.get("/shards/{name}", response_class=HTMLResponse)
    def shard_set(request: Request, name: str, cls: int | None = None, page: int = Query(0, ge=0)):
        size = ex.cfg.page_size
        info = ex.shardsets.listing(name, cls, page * size, size)
        return render(request, "shards.html", name=name, info=info, page=page, pages=max(1, -(-info["total"] // size)),
                      names=ex.class_names())

    @r.get("/sample", response_class=HTMLResponse)
    def sample(request: Request, shards: str, key: str, bank: str | None = None, bank2: str | None = None,
               x: int | None = None, y: int | None = None, box: str | None = None, superpixel: int | None = None,
               overlay: str = "", k: int | None = Query(None, ge=1, le=1000)):
        s = ex.shardsets.sample(shards, key)
        overlays = parse_overlays(overlay)
        where = parse_where(x, y, box, superpixel)
        bank = bank or default_bank(ex, shards)
        panels = [ask(ex, b, shards, key, where, k) for b in (bank, bank2) if b and where]
        h, w = s.image.shape[:2]
        region = next((query_region(p, ex) for p in panels if "result" in p), None)
        status = max([p["status"] for p in panels], default=200)
        return render(
            request, "sample.html", status, shards=shards, key=key, sample=s, h=h, w=w, scale=display_scale(h, w, ex.cfg.display),
            overlays=overlays, all_overlays=OVERLAYS, bank=bank, bank2=bank2, banks=ex.banks.names(), panels=panels,
            region=region, where=where, k=k, names=ex.class_names(), overlay=",".join(o for o in OVERLAYS if o in overlays),
        )  # fmt: skip


def _eval_routes(r: APIRouter, ex: ExploreContext, render: Render) -> None:
    """An evaluation's results and episodes, and one episode's Fig. 5 row."""

    @r.get("/eval/{name}", response_class=HTMLResponse)
    def evaluation(request: Request, name: str):
        summary = ex.evals.summary(name)
        if "error" in summary:
            raise ExploreError(404, summary["error"])
        results = ex.evals.results(name)
        lists = {}
        for entry in summary["episode_files"]:
            # fold<f>-<K>shot, or one file per seed: fold<f>-<K>shot-seed<s> (the rows list the first seed's)
            m = re.fullmatch(r"fold(\d+)-(\d+)shot(?:-seed(\d+))?", entry)
            if m is None:
                continue
            fold, shots = m.group(1), m.group(2)
            entry = f"fold{fold}-{shots}shot"
            if entry in lists:
                continue
            try:
                lists[entry] = {"fold": int(fold), "shots": int(shots), "episodes": ex.evals.episodes(name, int(fold), int(shots)).episodes[:500]}
            except ExploreError as exc:
                lists[entry] = {"fold": int(fold), "shots": int(shots), "error": str(exc)}
        folder = Path(ex.folders.path("evals", name))
        table = files.markdown_html(files.read_text(folder / "results.md")) if summary["has_markdown"] else ""
        names = {str(c): n for c, n in ex.class_names().items()} | results.get("class_names", {})
        return render(request, "eval.html", name=name, summary=summary, lists=lists, table=table, names=names)

    @r.get("/eval/{name}/episode", response_class=HTMLResponse)
    def episode(request: Request, name: str, fold: int, shots: int, index: int):
        info, _ = ex.evals.row(name, fold, shots, index)
        count = len(ex.evals.episodes(name, fold, shots).episodes)
        return render(request, "episode.html", name=name, info=info, fold=fold, shots=shots, index=index, count=count,
                      peers=ex.evals.peers(name, fold, shots), class_name=info["class_name"] or ex.class_names().get(info["class"], ""))


def _file_routes(r: APIRouter, ex: ExploreContext, render: Render) -> None:
    """Probe, sweep and evaluation folders: listings, tables, plots (paths checked by safe_join)."""

    @r.get("/files/{kind}/{name}/{path:path}")
    def folder_file(request: Request, kind: str, name: str, path: str = ""):
        if kind not in ("results", "evals"):
            raise ExploreError(404, f"no files of kind {kind!r} (expected results or evals)")
        root = Path(ex.folders.path(kind, name))
        full = safe_join(root, path, f"{kind} {name!r}")
        if full.is_dir():
            return render(request, "files.html", kind=kind, name=name, path=path, entries=files.listing(full, root), body=None)
        if not full.is_file():
            raise ExploreError(404, f"{kind} {name!r}: no file {path!r} under {root}")
        if full.suffix.lower() in files.IMAGES:
            return FileResponse(full, media_type=files.IMAGES[full.suffix.lower()])
        return render(request, "files.html", kind=kind, name=name, path=path, entries=None, body=files.text_html(full))

    @r.get("/files/{kind}/{name}", response_class=HTMLResponse)
    def folder_root(request: Request, kind: str, name: str):
        return folder_file(request, kind, name, "")
