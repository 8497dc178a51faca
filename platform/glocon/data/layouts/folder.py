"""A plain folder of images, searched recursively, with no masks.

- Files ending in .jpg, .jpeg, .png or .webp (any case) are images; everything else is ignored,
  as are hidden files and folders (names starting with '.', e.g. ``.git``, macOS ``._x.jpg``).
- Symlinked folders are followed, but each real folder is visited once: a link back to an
  ancestor (a loop) or to a folder already seen is skipped and logged as a warning naming the
  link and its target, so a loop can neither hang the scan nor duplicate images. Broken links are
  skipped and logged the same way.
- EXIF orientation is applied: a phone photo comes out upright (there is no mask to keep aligned).
- Keys are ``folder/<path relative to the root, with extension>``: unique even when ``a.jpg`` and
  ``a.png`` sit side by side, and stable across runs and machines.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from glocon.data.layouts._common import image_loader, require_root
from glocon.data.record import Record
from glocon.errors import DataError

log = logging.getLogger(__name__)
EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


def scan(root: str | os.PathLike) -> tuple[list[Path], list[tuple[str, str]]]:
    """Image files under ``root`` (sorted) and the (path, reason) of every link skipped."""
    root = Path(root)
    found: list[Path] = []
    skipped: list[tuple[str, str]] = []
    seen: set[tuple[int, int]] = set()

    def visit(folder: Path, ancestors: frozenset[tuple[int, int]]) -> None:
        st = folder.stat()
        ident = (st.st_dev, st.st_ino)
        seen.add(ident)
        ancestors = ancestors | {ident}
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            skipped.append((str(folder), f"cannot list folder: {exc}"))
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
                is_file = entry.is_file(follow_symlinks=True)
            except OSError as exc:  # e.g. ELOOP on a link to itself
                skipped.append((str(path), f"unreadable link: {exc}"))
                continue
            if entry.is_symlink() and not (is_dir or is_file):
                skipped.append((str(path), f"broken symlink to {os.readlink(path)}"))
                continue
            if is_dir:
                try:
                    sub = path.stat()
                except OSError as exc:
                    skipped.append((str(path), f"unreadable folder: {exc}"))
                    continue
                sub_id = (sub.st_dev, sub.st_ino)
                if sub_id in ancestors:
                    skipped.append((str(path), f"symlink loop: points back to {path.resolve()}"))
                elif sub_id in seen:
                    skipped.append((str(path), f"folder already scanned via another path ({path.resolve()})"))
                else:
                    visit(path, ancestors)
            elif is_file and path.suffix.lower() in EXTENSIONS:
                found.append(path)

    visit(root, frozenset())
    return sorted(found), skipped


def records(cfg) -> list[Record]:
    """Records of every image under ``cfg.root`` (no masks; EXIF orientation applied)."""
    root = require_root(cfg.root, "folder", "a folder of .jpg/.jpeg/.png/.webp images (searched recursively)")
    files, skipped = scan(root)
    for path, reason in skipped:
        log.warning("folder layout: skipped %s: %s", path, reason)
    if not files:
        raise DataError(
            f"folder {root} holds no images (expected files ending in {', '.join(EXTENSIONS)}, any case, "
            "searched recursively)"
        )
    out = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        out.append(
            Record(
                key=f"folder/{rel}",
                source=str(path),
                load_image=image_loader(path, cfg, apply_exif=True),
                layout="folder",
            )
        )
    return out
