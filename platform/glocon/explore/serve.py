"""Serve the explorer with uvicorn on the configured host and port (127.0.0.1 unless told)."""

from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING, Any

from glocon.errors import ConfigError
from glocon.explore.config import ExploreConfig

if TYPE_CHECKING:  # annotations only: fastapi is an optional extra
    from fastapi import FastAPI

EXTRA = "pip install -e '.[explore]' (fastapi, uvicorn, jinja2)"


def build_app(cfg: ExploreConfig, source: str = "the explorer config") -> FastAPI:
    try:
        from glocon.explore.app import create_app
    except ImportError as exc:
        raise ConfigError(f"glocon explore needs the 'explore' extra, missing {exc.name!r}: {EXTRA}") from None
    return create_app(cfg, source)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 takes a free one. Binding here (not in uvicorn) lets the caller
    print the real URL and lets tests serve on a free port without a race."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on connections whose socket says TCP, and
    # without it each response (headers, then body) waited ~40 ms for a delayed ACK (measured).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"explore: cannot listen on {host}:{port} ({exc.strerror}); set port=<free port> or port=0") from None
    sock.listen(128)
    return sock


def make_server(cfg: ExploreConfig, app: FastAPI | None = None) -> tuple[Any, socket.socket]:
    """(uvicorn.Server, its socket): ``server.run(sockets=[sock])`` serves until ``should_exit``."""
    import uvicorn

    app = app if app is not None else build_app(cfg)
    sock = bind(cfg.host, cfg.port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    return server, sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


def set_threads(threads: int | None) -> None:
    """The process's torch and faiss threads (the server's only: the job sets them, the app does not)."""
    if threads is None:
        return
    import faiss
    import torch

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)


def serve(cfg: ExploreConfig) -> int:
    """Block serving; Ctrl-C ends it."""
    set_threads(cfg.threads)
    server, sock = make_server(cfg)
    try:
        if not ipaddress.ip_address(socket.gethostbyname(cfg.host)).is_loopback:
            print(f"warning: listening on {cfg.host}: anyone who reaches it can read the configured folders", flush=True)
    except (OSError, ValueError):
        pass
    print(f"glocon explore: open {url_of(sock)}  (Ctrl-C ends it)", flush=True)
    server.run(sockets=[sock])
    return 0
