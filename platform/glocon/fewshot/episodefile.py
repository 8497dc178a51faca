"""Episodes and their files: ``Episode``, ``EpisodeSet`` (episodes plus the header that says how
they were drawn), and the one JSON file per (benchmark, fold, mode, shots, seed, n) that every run
and every model reads, checked against what the caller asks for when it is reused.

How episodes are drawn: ``glocon.fewshot.episodes``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from glocon.errors import DataError
from glocon.io import atomic_write_text

FORMAT = "glocon.episodes/v1"


@dataclass(frozen=True)
class Episode:
    cls: int
    query: str
    supports: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"class": self.cls, "query": self.query, "supports": list(self.supports)}

    @staticmethod
    def from_json(obj: Mapping[str, Any]) -> "Episode":
        return Episode(int(obj["class"]), str(obj["query"]), tuple(str(s) for s in obj["supports"]))


@dataclass
class EpisodeSet:
    """Episodes plus the header that says how they were drawn (checked when a file is reused)."""

    benchmark: str
    fold: int
    mode: str
    shots: int
    seed: int
    n_episodes: int
    classes: list[int]
    episodes: list[Episode]
    source_digest: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # what the file was drawn from, checked on reuse: the fold's class split and the shards' sha256
    base: list[int] | None = None
    novel: list[int] | None = None
    shards_sha256: str = ""

    def header(self) -> dict[str, Any]:
        h = asdict(self)
        h.pop("episodes")
        return {"format": FORMAT, **h}

    def keys(self) -> set[str]:
        out: set[str] = set()
        for e in self.episodes:
            out.add(e.query)
            out.update(e.supports)
        return out


# -- files -----------------------------------------------------------------------------------
def episode_file(directory: str | os.PathLike[str], benchmark: str, fold: int, mode: str, shots: int, seed: int, n: int) -> Path:
    return Path(directory) / f"{benchmark}-fold{fold}-{mode}-{shots}shot-seed{seed}-n{n}.json"


def save_episodes(es: EpisodeSet, path: str | os.PathLike[str]) -> Path:
    """One JSON file: the header, then one episode per line (diff-able, greppable)."""
    lines = ["{", f'  "header": {json.dumps(es.header(), sort_keys=True)},', '  "episodes": [']
    body = [f"    {json.dumps(e.to_json(), sort_keys=True)}" for e in es.episodes]
    lines.append(",\n".join(body))
    lines += ["  ]", "}"]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def load_episodes(path: str | os.PathLike[str]) -> EpisodeSet:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"episode file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        h = data["header"]
        if h.get("format") != FORMAT:
            raise DataError(f"episode file {p}: format {h.get('format')!r}, expected {FORMAT!r}")
        eps = [Episode.from_json(e) for e in data["episodes"]]
        return EpisodeSet(
            benchmark=str(h["benchmark"]),
            fold=int(h["fold"]),
            mode=str(h["mode"]),
            shots=int(h["shots"]),
            seed=int(h["seed"]),
            n_episodes=int(h["n_episodes"]),
            classes=[int(c) for c in h["classes"]],
            episodes=eps,
            source_digest=str(h.get("source_digest", "")),
            extra=dict(h.get("extra", {})),
            base=[int(c) for c in h["base"]] if h.get("base") is not None else None,
            novel=[int(c) for c in h["novel"]] if h.get("novel") is not None else None,
            shards_sha256=str(h.get("shards_sha256", "")),
        )
    except DataError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"episode file {p}: not a glocon episode file ({type(exc).__name__}: {exc})") from None


def validate_episodes(
    es: EpisodeSet,
    path: str | os.PathLike[str],
    *,
    expect: Mapping[str, Any],
    class_index: Mapping[int, Sequence[str]] | None = None,
    forbidden_classes: Iterable[int] = (),
    image_classes: Mapping[str, set[int]] | None = None,
) -> None:
    """A reused file must say what the caller asked for and fit the data it will be read from."""
    for name, want in expect.items():
        got = getattr(es, name)
        if got != want:
            raise DataError(
                f"episode file {path}: header {name}={got!r}, but this run asks for {want!r}; "
                "point episodes_dir elsewhere or delete the file to draw new episodes"
            )
    if len(es.episodes) != es.n_episodes:
        raise DataError(f"episode file {path}: header says {es.n_episodes} episodes, the file holds {len(es.episodes)}")
    forbidden = set(int(c) for c in forbidden_classes)
    index = {int(c): set(str(k) for k in ks) for c, ks in class_index.items()} if class_index is not None else None
    for i, e in enumerate(es.episodes):
        if len(e.supports) != es.shots:
            raise DataError(f"episode file {path}: episode {i} has {len(e.supports)} supports, expected {es.shots}")
        if e.query in e.supports or len(set(e.supports)) != len(e.supports):
            raise DataError(f"episode file {path}: episode {i} repeats an image (query {e.query!r}, supports {list(e.supports)})")
        if e.cls in forbidden:
            raise DataError(f"episode file {path}: episode {i} draws class {e.cls}, which this mode must not touch")
        if e.cls not in es.classes:  # an edited header: the scores are accumulated over the header's classes
            raise DataError(f"episode file {path}: episode {i} draws class {e.cls}, which its header's classes {list(es.classes)} do not list")
        if index is not None:
            keys = index.get(e.cls)
            missing = [k for k in (e.query, *e.supports) if keys is None or k not in keys]
            if missing:
                raise DataError(
                    f"episode file {path}: episode {i} (class {e.cls}) names images the data does not list for that class: "
                    f"{missing[:3]}; the file was drawn from other data"
                )
        if image_classes is not None and forbidden:
            for k in (e.query, *e.supports):
                bad = image_classes.get(k, set()) & forbidden
                if bad:
                    raise DataError(f"episode file {path}: episode {i} uses image {k!r}, which holds excluded classes {sorted(bad)}")
