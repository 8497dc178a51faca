"""The explorer's typed config: where it listens and the only folders it may read."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from glocon.config import GloconModel

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class ExploreConfig(GloconModel):
    # 127.0.0.1: only this machine sees the folders. Another address serves them to its network.
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)  # 0: any free port (printed at start)
    # name -> folder. Names appear in URLs; the folders are the only places the explorer reads.
    shards: dict[str, str] = {}  # shard folders (make_shards output: *.tar + manifest.json)
    banks: dict[str, str] = {}  # bank folders (glocon bank build); two or more allow the side-by-side switch
    evals: dict[str, str] = {}  # evaluation out_dirs (results.json, config.resolved.yaml, fig5-*.png)
    results: dict[str, str] = {}  # probe and sweep output folders (their tables and plots)
    # Folders of files that banks and evaluations name but that are not browsed: priors, fitted
    # weights, episode files. Read when a bank or an evaluation needs them, never listed or served.
    inputs: list[str] = []
    class_names: str | None = None  # YAML {id: name} (as a bank's class_names); default: the banks' own
    k: int | None = Field(None, ge=1)  # hits per query; None: the bank's own query.k (config.resolved.yaml)
    page_size: int = Field(60, ge=1, le=1000)  # thumbnails per page
    display: int = Field(384, ge=64)  # a sample is shown enlarged (nearest, integer factor) to this longest side
    tile: int = Field(128, ge=32)  # hit tile side in pixels
    cache_samples: int = Field(256, ge=1)  # decoded samples kept in memory
    device: Literal["auto", "cpu", "cuda"] = "cpu"  # where queries are embedded and Fig. 5 rows computed
    # torch / faiss threads of the server. 1: a click's resnet18 forward took 100 ms with one thread
    # and 980 ms with two on this 2-core machine while other jobs ran (threads spin for busy cores).
    threads: int | None = Field(1, ge=1)  # None: torch's default

    @field_validator("shards", "banks", "evals", "results")
    @classmethod
    def _names_are_url_safe(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [n for n in v if not _NAME.match(n)]
        if bad:
            raise ValueError(f"name {bad[0]!r} must be letters, digits, '_', '.' or '-' (it appears in URLs)")
        return v
