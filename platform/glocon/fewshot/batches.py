"""Episodes -> tensors: the query, its label at both resolutions, the supports and their masks.

Reads through an ``EpisodeSource`` (``get(key) -> Sample``), so shards, an in-memory test set or
any other reader plug in. Labels are binary per episode: 1 on the episode's class, 255 where
the data says ignore, 0 elsewhere.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from glocon.errors import DataError
from glocon.fewshot.episodefile import Episode
from glocon.fewshot.episodes import EpisodeSource
from glocon.fewshot.transforms import ResizeInfo, binary_label, support_mask, eval_resize, train_augment

if TYPE_CHECKING:  # annotations only
    from glocon.data.shardindex import ShardIndex
    from glocon.data.schema import Sample


class ShardEpisodeSource:
    """One or more ``glocon.data.shardindex.ShardIndex`` (e.g. COCO's train and val shards) as one
    episode source, plus ``image_classes(key)``: every class an image holds at any pixel count
    (the sample's ``json`` member), so validation episodes can drop an image with even a sliver
    of a novel class. Only that member is read for it."""

    def __init__(self, *indexes: ShardIndex) -> None:
        if not indexes:
            raise DataError("no shard index given")
        self.indexes = list(indexes)
        merged: dict[int, list[str]] = {}
        seen: set[str] = set()
        for index in self.indexes:
            keys = set(index.keys())
            dup = keys & seen
            if dup:
                raise DataError(f"sample key {sorted(dup)[0]!r} appears in more than one shard set; keys must be unique")
            seen |= keys
            for c, ks in index.class_index.items():
                merged.setdefault(int(c), []).extend(str(k) for k in ks)
        self.class_index = {c: sorted(ks) for c, ks in sorted(merged.items())}
        self._classes: dict[str, dict[int, int]] = {}

    def class_names(self) -> dict[int, str]:
        """Class id -> name from the shards' manifests (COCO, semantic layouts); {} when none says."""
        names: dict[int, str] = {}
        for index in self.indexes:
            table = getattr(index.manifest, "class_table", None)
            if table is not None:
                names.update(table.names)
        return names

    def digest(self) -> str:
        """sha256 over every shard's sha256 in the manifests: what episode files and the fit cache are keyed by."""
        import hashlib

        h = hashlib.sha256()
        for index in self.indexes:
            for entry in index.manifest.shards:
                h.update(entry.sha256.encode())
        return h.hexdigest()[:20]

    def _index_of(self, key: str) -> ShardIndex:
        for index in self.indexes:
            if key in index:
                return index
        raise KeyError(f"sample {key!r} is in none of the shard sets")

    def get(self, key: str) -> Sample:
        return self._index_of(key).get(key)

    def image_classes(self, key: str) -> dict[int, int]:
        if key not in self._classes:
            self._classes[key] = self._read_classes(key)
        return self._classes[key]

    def _read_classes(self, key: str) -> dict[int, int]:
        index = self._index_of(key)
        # ShardIndex reads only the json member; any other source decodes the sample
        meta = index.meta(key) if hasattr(index, "meta") and callable(index.meta) else index.get(key).meta
        return {int(c): int(n) for c, n in meta.get("classes", {}).items()}


class CachedSource:
    """Wraps a source with a small LRU of decoded samples (episodes reuse images a lot)."""

    def __init__(self, source: EpisodeSource, capacity: int = 256) -> None:
        self.source = source
        self.capacity = capacity
        self.class_index = source.class_index
        self._cache: OrderedDict[str, Sample] = OrderedDict()

    def get(self, key: str) -> Sample:
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        sample = self.source.get(key)
        self._cache[key] = sample
        if len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return sample

    def __getattr__(self, name: str) -> Any:  # image_classes, class_names, ... of the wrapped source
        if name.startswith("_") or name == "source":  # unpickling looks these up before __dict__ is set
            raise AttributeError(name)
        return getattr(self.source, name)


def episode_label(sample: Sample, cls: int) -> np.ndarray:
    """(H, W) uint8 in {0, 1, 255} for class ``cls``. FSS-1000 masks are binary: 1 means the
    sample's ``binary_class`` (glocon.data.record's convention)."""
    mask = sample.mask
    if mask is None:
        raise DataError(f"sample {sample.key!r}: has no mask, so it cannot be part of a few-shot episode")
    extra = (sample.meta or {}).get("extra") or {}
    if "binary_class" in extra:
        if int(extra["binary_class"]) != int(cls):
            raise DataError(f"sample {sample.key!r}: a binary mask of class {extra['binary_class']}, asked for class {cls}")
        return binary_label(mask, 1)
    return binary_label(mask, cls)


@dataclass
class EvalEpisode:
    """One test episode ready for a model. Square tensors are (S, S); ``label`` is original size."""

    episode: Episode
    query: torch.Tensor  # (3, S, S) float [0, 1]
    label: torch.Tensor  # (H, W) long {0, 1, 255}: the original-resolution target
    info: ResizeInfo
    supports: torch.Tensor  # (K, 3, S, S)
    support_masks: torch.Tensor  # (K, S, S) float {0, 1}
    query_image: np.ndarray  # (H, W, 3) uint8, for figures
    support_images: list[np.ndarray]  # K x (h, w, 3) uint8, for figures
    support_labels: list[np.ndarray]  # K x (h, w) uint8 in {0, 1, 255}
    query_label: torch.Tensor  # (S, S) long at the model's input: read only by an oracle diagnostic


def load_eval_episode(source: EpisodeSource, episode: Episode, size: int) -> EvalEpisode:
    q = source.get(episode.query)
    q_label = episode_label(q, episode.cls)
    q_img, q_lab, info = eval_resize(q.image, q_label, size)
    s_imgs, s_masks, raw_imgs, raw_labels = [], [], [], []
    for key in episode.supports:
        s = source.get(key)
        s_label = episode_label(s, episode.cls)
        img, lab, _ = eval_resize(s.image, s_label, size)
        s_imgs.append(img)
        s_masks.append(support_mask(lab))
        raw_imgs.append(s.image)
        raw_labels.append(s_label)
    return EvalEpisode(
        episode=episode,
        query=q_img,
        label=torch.from_numpy(q_label.astype(np.int64)),
        info=info,
        supports=torch.stack(s_imgs),
        support_masks=torch.stack(s_masks),
        query_image=q.image,
        support_images=raw_imgs,
        support_labels=raw_labels,
        query_label=q_lab,
    )


def stack_eval(batch: Sequence[EvalEpisode]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> query (B, 3, S, S), supports (B, K, 3, S, S), support masks (B, K, S, S)."""
    return (
        torch.stack([e.query for e in batch]),
        torch.stack([e.supports for e in batch]),
        torch.stack([e.support_masks for e in batch]),
    )


class TrainEpisodes(Dataset[dict[str, torch.Tensor]]):
    """Map-style dataset over training episode *indices*: item ``i`` is fully determined by
    (seed, i), so DataLoader workers and resumed runs see the same augmented episodes.

    With ``views`` each image only ever appears as one of its ``views`` fixed augmented views
    (``glocon.fewshot.cache``): the very inputs the fit cache stores features of."""

    def __init__(
        self, source: EpisodeSource, sampler: Callable[[int], Episode], size: int, seed: int, indices: Sequence[int], scale: tuple[float, float] = (0.9, 1.1), views: int | None = None
    ) -> None:
        self.source = source
        self.sampler = sampler
        self.size = size
        self.seed = seed
        self.indices = list(indices)
        self.scale = scale
        self.views = views

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        index = self.indices[i]
        episode = self.sampler(index)
        if self.views is not None:
            from glocon.fewshot.cache import ViewSpec, episode_tensors, view_of

            spec = ViewSpec(self.size, (self.scale[0], self.scale[1]), self.views, self.seed)
            return {**episode_tensors(lambda key, v: view_of(self.source.get(key), v, spec), episode, self.seed, index, self.views), "index": torch.tensor(index)}
        rng = np.random.default_rng([self.seed, index])
        q = self.source.get(episode.query)
        q_img, q_lab = train_augment(q.image, episode_label(q, episode.cls), self.size, rng, self.scale)
        s_imgs, s_masks = [], []
        for key in episode.supports:
            s = self.source.get(key)
            img, lab = train_augment(s.image, episode_label(s, episode.cls), self.size, rng, self.scale)
            s_imgs.append(img)
            s_masks.append(support_mask(lab))
        return {
            "query": q_img,
            "target": q_lab,
            "support_images": torch.stack(s_imgs),
            "support_masks": torch.stack(s_masks),
            "index": torch.tensor(index),
        }


class RecordSource:
    """Layout records (``glocon.data.layouts.open_layout``) as an episode source, without shards:
    decodes on demand. ``class_index`` follows PFENet's rule (``min_pixels``, default 2 x 32 x 32)."""

    def __init__(self, records: Sequence[Any], min_pixels: int | None = None) -> None:
        from glocon.data.record import MIN_CLASS_PIXELS, class_pixels, classes_present

        self.records = {r.key: r for r in records if r.has_mask}
        self._pixels: dict[str, dict[int, int]] = {}
        index: dict[int, list[str]] = {}
        for key in sorted(self.records):
            pixels = class_pixels(self.records[key].load_mask())
            extra = self.records[key].extra or {}
            if "binary_class" in extra:  # FSS-1000: 1 means the record's class
                pixels = {int(extra["binary_class"]): pixels.get(1, 0)} if pixels.get(1) else {}
            self._pixels[key] = pixels
            for c in classes_present(pixels, MIN_CLASS_PIXELS if min_pixels is None else min_pixels):
                index.setdefault(c, []).append(key)
        self.class_index = index

    def image_classes(self, key: str) -> dict[int, int]:
        return self._pixels[key]

    def get(self, key: str) -> Sample:
        from glocon.data.schema import Sample

        r = self.records[key]
        image = np.asarray(r.load_image().convert("RGB"), dtype=np.uint8)
        mask = r.load_mask()
        h, w = mask.shape
        zeros = np.zeros((h, w), np.int32)
        meta = {"key": key, "source": r.source, "orig_size": [h, w], "size": [h, w], "classes": {str(c): n for c, n in self._pixels[key].items()}, "extra": dict(r.extra or {})}
        return Sample(key=key, image=image, slic=zeros, fh=zeros, meta=meta, mask=mask)
