"""Seeded few-shot episodes, written to a file and reused, so every run and every model is scored
on the very same (class, query, supports). The file and its checks: ``glocon.fewshot.episodefile``.

An episode is one class c, one query image and K support images that all contain c (at least
2 x 32 x 32 pixels of it, PFENet's rule, already applied by the source's ``class_index``).

Modes (a fold splits the classes into *base* and *novel*):

- ``test``: novel classes of the fold; what the results table reports.
- ``val``: base classes, drawn only from images that hold no novel class of the fold at all. It is
  what a sweep's ``objective`` scores, so choosing a prior never looks at the classes (or the
  images) it will be tested on.
- ``train``: base classes from the same novel-free images; drawn on the fly by ``fit`` (PFENet's
  training list keeps images with novel objects as background; glocon drops them, as the
  validation episodes must anyway).

Sampling follows HSNet (``juhongm999/hsnet``, ``data/coco.py``: ``sample_episode``): a class
uniformly, a query uniformly among its images, then K distinct supports that are not the query.
FSS-1000 follows HSNet's ``data/fss.py``: each test image is a query of its own class, and the K
supports are other images of that class.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal, Mapping, Protocol, Sequence, runtime_checkable

from glocon.errors import DataError
from glocon.fewshot.episodefile import Episode, EpisodeSet, episode_file, load_episodes, save_episodes, validate_episodes
from glocon.seeds import rng_for

if TYPE_CHECKING:  # annotations only
    from glocon.data.schema import Sample

DEFAULT_EPISODES = 1000
DEFAULT_SEED = 321  # PFENet's manual_seed

Mode = Literal["train", "val", "test"]
MODES = ("train", "val", "test")


@runtime_checkable
class EpisodeSource(Protocol):
    """What episodes need from a data set: its images and which images hold which class.

    ``class_index``: {class id: [keys of images where the class covers >= 2 x 32 x 32 px]}.
    ``get(key)``: the decoded sample (image, mask, meta) of an image.

    Optional, looked up with ``getattr`` (so not part of the protocol): ``image_classes(key) ->
    {class id: pixels}`` with *every* class present (any pixel count), so validation episodes
    exclude an image with even a sliver of a novel class (without it the exclusion uses
    ``class_index``); ``digest() -> str``, what episode files and the fit cache are keyed by;
    ``class_names() -> {class id: name}``, for reports.
    """

    @property
    def class_index(self) -> Mapping[int, Sequence[str]]: ...

    def get(self, key: str) -> Sample: ...


# -- pools -----------------------------------------------------------------------------------
def normalize_class_index(class_index: Mapping[Any, Sequence[str]]) -> dict[int, list[str]]:
    """{class: [keys]} with int class ids (JSON manifests store them as strings)."""
    return {int(c): [str(k) for k in keys] for c, keys in class_index.items()}


def image_classes_from_index(class_index: Mapping[int, Sequence[str]]) -> dict[str, set[int]]:
    """Invert {class: [keys]} -> {key: {classes}}."""
    out: dict[str, set[int]] = {}
    for c, keys in normalize_class_index(class_index).items():
        for k in keys:
            out.setdefault(str(k), set()).add(int(c))
    return out


def source_image_classes(source: EpisodeSource) -> dict[str, set[int]]:
    """{key: every class id the image holds}, as precise as the source allows."""
    inverted = image_classes_from_index(source.class_index)
    fn = getattr(source, "image_classes", None)
    if callable(fn):
        return {k: set(int(c) for c in fn(k)) | v for k, v in inverted.items()}
    return inverted


def class_pool(
    class_index: Mapping[int, Sequence[str]],
    classes: Iterable[int],
    min_images: int,
    exclude_classes: Iterable[int] = (),
    image_classes: Mapping[str, set[int]] | None = None,
) -> dict[int, list[str]]:
    """{class: sorted keys} for the wanted classes, dropping images that hold any excluded class
    and classes left with fewer than ``min_images`` images (a K-shot episode needs K + 1)."""
    excluded = set(int(c) for c in exclude_classes)
    index = normalize_class_index(class_index)
    img_cls = image_classes if image_classes is not None else image_classes_from_index(index)
    pool: dict[int, list[str]] = {}
    for c in sorted(set(int(c) for c in classes)):
        keys = sorted(index.get(c, ()))
        if excluded:
            keys = [k for k in keys if not (img_cls.get(k, set()) & excluded)]
        if len(keys) >= min_images:
            pool[c] = keys
    return pool


def mode_classes(mode: str, base: Sequence[int], novel: Sequence[int]) -> tuple[list[int], list[int]]:
    """(classes to draw, classes whose images are excluded) for a mode."""
    if mode == "test":
        return list(novel), []
    if mode in ("val", "train"):
        return list(base), list(novel)
    raise DataError(f"episode mode {mode!r}: expected one of {MODES}")


# -- sampling --------------------------------------------------------------------------------
def sample_episode(pool: Mapping[int, Sequence[str]], shots: int, rng: random.Random) -> Episode:
    """HSNet's COCO sampler: class uniform, query uniform, K distinct supports != query."""
    classes = sorted(pool)
    c = classes[rng.randrange(len(classes))]
    keys = pool[c]
    query = keys[rng.randrange(len(keys))]
    others = [k for k in keys if k != query]
    supports = tuple(rng.sample(others, shots))
    return Episode(c, query, supports)


def sample_episodes(pool: Mapping[int, Sequence[str]], shots: int, n: int, rng: random.Random) -> list[Episode]:
    return [sample_episode(pool, shots, rng) for _ in range(n)]


def sample_query_episodes(pool: Mapping[int, Sequence[str]], shots: int, n: int, rng: random.Random) -> list[Episode]:
    """HSNet's FSS-1000 sampler: every image is a query once (seeded order), supports from its class.

    HSNet runs all 2400 test images; ``n`` smaller than that takes a seeded subset, larger cycles.
    """
    pairs = [(c, k) for c in sorted(pool) for k in pool[c]]
    order = list(range(len(pairs)))
    rng.shuffle(order)
    out: list[Episode] = []
    while len(out) < n:
        for i in order:
            if len(out) == n:
                break
            c, query = pairs[i]
            others = [k for k in pool[c] if k != query]
            out.append(Episode(c, query, tuple(rng.sample(others, shots))))
    return out


def episode_rng(seed: int, benchmark: str, fold: int, mode: str, shots: int) -> random.Random:
    """One RNG per (seed, benchmark, fold, mode, shots): adding a fold never shifts another's episodes."""
    return rng_for(f"{seed}/{benchmark}/{fold}/{mode}/{shots}")


def pool_digest(pool: Mapping[int, Sequence[str]]) -> str:
    """A fingerprint of the images the episodes may draw from (changes when the data changes)."""
    h = hashlib.sha256()
    for c in sorted(pool):
        h.update(f"{c}:".encode())
        for k in pool[c]:
            h.update(k.encode() + b"\0")
    return h.hexdigest()[:16]


def build_episodes(
    class_index: Mapping[int, Sequence[str]],
    *,
    benchmark: str,
    fold: int,
    mode: str,
    shots: int,
    n_episodes: int = DEFAULT_EPISODES,
    seed: int = DEFAULT_SEED,
    base: Sequence[int],
    novel: Sequence[int],
    image_classes: Mapping[str, set[int]] | None = None,
    shards_sha256: str = "",
) -> EpisodeSet:
    """Draw ``n_episodes`` K-shot episodes of a fold in a mode (see the module docstring)."""
    if shots < 1:
        raise DataError(f"shots={shots}: expected >= 1")
    if n_episodes < 1:
        raise DataError(f"n_episodes={n_episodes}: expected >= 1")
    draw, exclude = mode_classes(mode, base, novel)
    pool = class_pool(class_index, draw, shots + 1, exclude, image_classes)
    if not pool:
        raise DataError(
            f"{benchmark} fold {fold} ({mode}, {shots}-shot): no class among {sorted(draw)} has {shots + 1} or more "
            f"images (each with >= 2x32x32 px of the class{', and no novel class' if exclude else ''}); "
            "use more data or fewer shots"
        )
    rng = episode_rng(seed, benchmark, fold, mode, shots)
    sampler = sample_query_episodes if benchmark == "fss" else sample_episodes
    episodes = sampler(pool, shots, n_episodes, rng)
    return EpisodeSet(
        benchmark=benchmark,
        fold=fold,
        mode=mode,
        shots=shots,
        seed=seed,
        n_episodes=n_episodes,
        classes=sorted(pool),
        episodes=episodes,
        source_digest=pool_digest(pool),
        extra={"excluded_classes": sorted(int(c) for c in exclude), "skipped_classes": sorted(set(int(c) for c in draw) - set(pool))},
        base=sorted(int(c) for c in base),
        novel=sorted(int(c) for c in novel),
        shards_sha256=shards_sha256,
    )



def episodes_for(
    source: EpisodeSource,
    directory: str | os.PathLike[str],
    *,
    benchmark: str,
    fold: int,
    mode: str,
    shots: int,
    n_episodes: int = DEFAULT_EPISODES,
    seed: int = DEFAULT_SEED,
    base: Sequence[int],
    novel: Sequence[int],
) -> tuple[EpisodeSet, Path, bool]:
    """Reuse the episode file for these parameters if it exists (validated), else draw and save it.

    Returns (episodes, path, reused).
    """
    path = episode_file(directory, benchmark, fold, mode, shots, seed, n_episodes)
    _, exclude = mode_classes(mode, base, novel)
    img_cls = source_image_classes(source) if exclude else None
    # what a reused file's header must say is exactly what a new file would be drawn with: the
    # parameters, the fold's class split (a changed novel_classes must not reuse old episodes) and
    # the shards they come from (when the source can say, e.g. shard manifests)
    header = {"benchmark": benchmark, "fold": fold, "mode": mode, "shots": shots, "seed": seed, "n_episodes": n_episodes}
    digest = getattr(source, "digest", None)  # optional: ``digest() -> str`` (``EpisodeSource``)
    shards_sha256: str = digest() if callable(digest) else ""
    provenance = {"novel": sorted(int(c) for c in novel), "base": sorted(int(c) for c in base), "shards_sha256": shards_sha256}
    if path.is_file():
        es = load_episodes(path)
        validate_episodes(
            es, path, expect={**header, **provenance}, class_index=source.class_index, forbidden_classes=exclude, image_classes=img_cls
        )
        return es, path, True
    es = build_episodes(
        source.class_index, benchmark=benchmark, fold=fold, mode=mode, shots=shots, seed=seed, n_episodes=n_episodes,
        base=base, novel=novel, image_classes=img_cls, shards_sha256=shards_sha256,
    )  # fmt: skip
    save_episodes(es, path)
    return es, path, False


class TrainEpisodeSampler:
    """Training episodes drawn on the fly: episode ``i`` depends only on (seed, fold, shots, i), so a
    resumed run draws exactly what the interrupted one would have."""

    def __init__(
        self,
        class_index: Mapping[int, Sequence[str]],
        *,
        benchmark: str,
        fold: int,
        shots: int,
        seed: int,
        base: Sequence[int],
        novel: Sequence[int],
        image_classes: Mapping[str, set[int]] | None = None,
        held_out: Iterable[str] = (),
        novel_images: Literal["drop", "background"] = "drop",
    ) -> None:
        draw, exclude = mode_classes("train", base, novel)
        # base-class images free of novel classes (glocon's rule), or, with novel_images="background"
        # (PFENet's training list), every base-class image, its novel pixels background in the binary label
        strict = class_pool(class_index, draw, shots + 1, exclude, image_classes)
        self.full_pool = strict if novel_images == "drop" else class_pool(class_index, draw, shots + 1, (), image_classes)
        # ``pool``: full_pool less the images held out for base-val (``glocon.fewshot.baseval``),
        # which no training episode reads; base-val draws from held-out images free of novel classes
        held = self.held_out = set(held_out)
        self.pool = _keep(self.full_pool, lambda k: k not in held, shots + 1)
        self.val_pool = _keep(strict, lambda k: k in held, shots + 1)
        if not self.pool:
            why = f" (after holding out {len(held)} images for base-val: lower fit.val_fraction)" if held else ""
            raise DataError(f"{benchmark} fold {fold}: no base class has {shots + 1} images free of novel classes to train on{why}")
        self.shots = shots
        self.tag = f"{seed}/{benchmark}/{fold}/train/{shots}"

    def __call__(self, index: int) -> Episode:
        return sample_episode(self.pool, self.shots, rng_for(f"{self.tag}/{index}"))


def _keep(pool: Mapping[int, Sequence[str]], keep: Callable[[str], bool], min_images: int) -> dict[int, list[str]]:
    """{class: the keys ``keep`` accepts}, classes left with fewer than ``min_images`` dropped."""
    out = {c: [k for k in keys if keep(k)] for c, keys in pool.items()}
    return {c: ks for c, ks in out.items() if len(ks) >= min_images}
