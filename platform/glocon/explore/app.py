"""The explorer's routes: server-rendered pages over a JSON API that answer from the same objects.

Pages: ``/`` (index), ``/shards/{name}`` (thumbnails, class filter), ``/sample`` (overlays, click
or drag to ask the banks), ``/eval/{name}`` and ``/eval/{name}/episode`` (Fig. 5 rows),
``/files/{kind}/{name}/{path}`` (probe, sweep and evaluation files). The API lives under ``/api``
(``/api/docs`` lists it). Bad input is an ``ExploreError``: a page shows its message, the API
answers ``{"error": message, "status": code}`` with that 4xx code, and the server keeps serving.
"""

from __future__ import annotations

import json
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException

from glocon.bank.store import load_class_names
from glocon.errors import GloconError
from glocon.explore.banks import Banks
from glocon.explore.config import ExploreConfig
from glocon.explore.folders import ExploreError, Folders
from glocon.explore.regions import Evals
from glocon.explore.shardsets import ShardSets

HERE = Path(__file__).resolve().parent


class Explorer:
    """Everything the routes share: the folders and the opened shard sets, banks and evaluations."""

    def __init__(self, cfg: ExploreConfig, source: str = "the explorer config") -> None:
        self.cfg = cfg
        self.folders = Folders(cfg)
        self.folders.config_source = source
        self.shardsets = ShardSets(self.folders, cfg.cache_samples)
        self.banks = Banks(self.folders, self.shardsets, cfg.device, cfg.k)
        self.evals = Evals(self.folders, cfg.device)
        self._names: dict[int, str] | None = None

    def class_names(self) -> dict[int, str]:
        """The config's class names file, else the names the banks recorded."""
        if self._names is None:
            names: dict[int, str] = {}
            if self.cfg.class_names:
                names = load_class_names(self.cfg.class_names)
            else:
                for path in self.folders.named["banks"].values():
                    manifest = Path(path) / "manifest.json"
                    if manifest.is_file():
                        names.update({int(k): v for k, v in json.loads(manifest.read_text()).get("class_names", {}).items()})
            self._names = names
        return self._names


def error_status(exc: Exception) -> int:
    return exc.status if isinstance(exc, ExploreError) else 400


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _install_error_handlers(app: FastAPI, templates: Jinja2Templates) -> None:
    def respond(request: Request, status: int, message: str):
        if _is_api(request):
            return JSONResponse({"error": message, "status": status}, status_code=status)
        return templates.TemplateResponse(request, "error.html", {"message": message, "status": status}, status_code=status)

    @app.exception_handler(GloconError)
    async def _glocon(request: Request, exc: GloconError):  # ExploreError and the bank's own errors
        return respond(request, error_status(exc), str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path"))
            parts.append(f"parameter {where!r}: {err.get('msg')} (got {err.get('input')!r})")
        return respond(request, 400, "; ".join(parts) or "bad request")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        message = f"no page at {request.url.path}" if exc.status_code == 404 else str(exc.detail)
        return respond(request, exc.status_code, message)


def create_app(cfg: ExploreConfig, source: str = "the explorer config") -> FastAPI:
    """The app for one config. ``source``: how error messages name the config (its file)."""
    from glocon.explore import api, pages

    ex = Explorer(cfg, source)
    app = FastAPI(title="glocon explore", docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json")
    app.state.explorer = ex
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    _install_error_handlers(app, templates)
    app.include_router(api.router(ex))
    app.include_router(pages.router(ex, templates))
    return app
