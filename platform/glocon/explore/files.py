"""The files probe, sweep and evaluation jobs write, as pages: folder listings, markdown tables,
CSV tables, JSON and YAML as text, images as themselves. Nothing here writes."""

from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path
from typing import Any

from glocon.explore.folders import ExploreError

IMAGES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}
TEXT = {".md", ".csv", ".json", ".jsonl", ".yaml", ".yml", ".txt", ".log"}
MAX_TEXT = 4 << 20  # a page of text larger than this is cut (a sweep's logs can be huge)
LISTED = set(IMAGES) | TEXT


def listing(folder: Path, root: Path) -> list[dict[str, Any]]:
    """Entries of ``folder`` that a page can show: sub-folders, images and text files."""
    if not folder.is_dir():
        raise ExploreError(404, f"folder not found: {folder}")
    out = []
    for p in sorted(folder.iterdir(), key=lambda p: (not p.is_dir(), p.name)):
        if p.name.startswith("."):
            continue
        if p.is_dir() or p.suffix.lower() in LISTED:
            out.append({"name": p.name, "path": str(p.resolve().relative_to(root.resolve())), "dir": p.is_dir(),
                        "image": p.suffix.lower() in IMAGES, "bytes": None if p.is_dir() else p.stat().st_size})
    return out


def read_text(path: Path) -> str:
    data = path.read_bytes()[:MAX_TEXT]
    return data.decode("utf-8", errors="replace")


def markdown_html(text: str) -> str:
    """Markdown (pipe tables included) as HTML, by Python-Markdown. Raw HTML in the file is escaped
    first, so a results file can never run script in the page."""
    try:
        import markdown
    except ImportError:
        return f"<pre>{html.escape(text)}</pre>"
    return markdown.markdown(html.escape(text, quote=False), extensions=["tables", "fenced_code"])


def csv_html(text: str) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return "<p>(empty)</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table class='data'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def text_html(path: Path) -> str:
    """The body of a file's page."""
    suffix = path.suffix.lower()
    if suffix not in TEXT:
        raise ExploreError(415, f"{path.name}: not a file the explorer shows (it shows {', '.join(sorted(LISTED))})")
    text = read_text(path)
    if suffix == ".md":
        return markdown_html(text)
    if suffix == ".csv":
        return csv_html(text)
    if suffix == ".json":
        try:
            text = json.dumps(json.loads(text), indent=2, sort_keys=True)
        except ValueError:
            pass
    return f"<pre>{html.escape(text)}</pre>"
