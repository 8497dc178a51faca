"""Named folders and the checks every read goes through.

A request names a folder by its config name and, at most, a path *inside* it. A path that is
absolute or holds ``..`` is refused before it touches the disk; what is left is resolved (symlinks
followed) and must still lie under the folder. Files that artifacts name themselves (a bank's
shards and prior, an evaluation's episode file and weights) must lie under a configured folder too.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Iterable

from glocon.errors import GloconError
from glocon.explore.config import ExploreConfig

KINDS = {"shards": "shards set", "banks": "bank", "evals": "evaluation", "results": "results folder"}


class ExploreError(GloconError):
    """Bad input to the explorer: shown in the page, or as ``{"error": ...}`` by the API, with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    return Path(path).resolve().is_relative_to(Path(root).resolve())


def safe_join(root: Path, rel: str, what: str) -> Path:
    """``root / rel`` resolved, or a 403 when ``rel`` is absolute, holds ``..`` or escapes by a link."""
    if not rel:
        return root.resolve()
    parts = PurePosixPath(rel.replace("\\", "/"))
    if parts.is_absolute() or ".." in parts.parts or Path(rel).is_absolute():
        raise ExploreError(403, f"{what}: path {rel!r} refused: it is absolute or holds '..' (the explorer reads only under {root})")
    full = (root / rel).resolve()
    if not full.is_relative_to(root.resolve()):
        raise ExploreError(403, f"{what}: path {rel!r} refused: it leads outside {root} (a link?)")
    return full


class Folders:
    """The config's folders by kind and name, and the roots any read must lie under."""

    def __init__(self, cfg: ExploreConfig) -> None:
        self.named = {kind: dict(getattr(cfg, kind)) for kind in KINDS}
        self.inputs = list(cfg.inputs)
        self.config_source = "the explorer config"

    def path(self, kind: str, name: str) -> str:
        """The folder as the config writes it (relative paths stay relative, as the CLI's would)."""
        folders = self.named[kind]
        if name not in folders:
            known = ", ".join(sorted(folders)) or "none"
            raise ExploreError(404, f"unknown {KINDS[kind]} {name!r} (configured: {known})")
        return folders[name]

    def roots(self, kinds: Iterable[str] = KINDS) -> list[Path]:
        out = [Path(p) for kind in kinds for p in self.named[kind].values()]
        return out + [Path(p) for p in self.inputs]

    def require(self, path: str | os.PathLike, what: str, kinds: Iterable[str] = KINDS) -> Path:
        """``path`` if it lies under a configured folder of ``kinds`` (or ``inputs``), else a 403."""
        roots = self.roots(kinds)
        if any(inside(path, r) for r in roots):
            return Path(path)
        raise ExploreError(
            403,
            f"{what} {path} lies outside the folders the explorer may read ({', '.join(map(str, roots)) or 'none'}); "
            f"add its folder to 'inputs' (or to 'shards' for shards) in {self.config_source}",
        )

    def name_of(self, kind: str, path: str | os.PathLike) -> str | None:
        """The name of the configured folder of ``kind`` that holds ``path`` (None: none does)."""
        for name, root in self.named[kind].items():
            if inside(path, root):
                return name
        return None
