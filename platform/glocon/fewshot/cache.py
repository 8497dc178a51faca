"""The frozen-feature cache of few-shot fit.

F and F_p are frozen, so most of a QGNet training step recomputes the same two backbones on the
same images (issue 12). The cache computes them once for a fixed set of augmented *views* per
image and stores them memory-mapped beside the run; fit then trains only the heads.

- A view is PFENet's training augmentation (random scale, flip, crop) of the whole image and its
  whole mask, drawn once per (seed, key, view) (``view_of``): the crop keeps the image's objects,
  whatever class an episode will ask about. A training episode picks, seeded by its index, one
  view for its query and one for each support (``view_choice``); its label is the view's mask
  binarised for the episode's class. ``TrainEpisodes(views=...)`` draws the very same views
  without the cache, so the two paths give identical inputs and, step by step, the same logits
  (to float rounding, ~1e-5: an image's views are encoded in one batch, which halves the cost).
- What is stored is what the plugin's model says is frozen: ``encode_query(images)`` per
  (key, view), and ``encode_support(images, masks)`` per (key, view, class), because PFENet's
  support path reads the support mask inside the frozen backbone (layer4 of layer3 x mask).
- The cache folder is named by a digest of everything that changes those tensors: the shards'
  sha256 (from their manifests, or the source's own digest), the plugin and its model config,
  the prior's sha256, the image size, the augmentation, the number of views and the seed, and the
  images of the fold's training pool. Changing any of them builds a new cache.

A model whose frozen BatchNorm runs in train mode (PFENet's choice, ``backbone_bn=train``) has
features that depend on the batch; it cannot be cached, and fit says so.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import torch

from glocon.featstore import FeatureStore, StoredEncoders
from glocon.ops import IGNORE_INDEX
from glocon.fewshot.episodefile import Episode
from glocon.fewshot.transforms import binary_label, support_mask, train_augment
from glocon.io import atomic_write_json

if TYPE_CHECKING:  # annotations only
    from glocon.data.schema import Sample
    from glocon.fewshot.episodes import EpisodeSource

FORMAT = "glocon.fewshot_cache/v1"


def can_cache(model: torch.nn.Module) -> tuple[bool, str]:
    """(yes, why not): the model splits its frozen encoders from its head, with eval-mode BN."""
    m = getattr(model, "module", model)
    if not (hasattr(m, "encode_query") and hasattr(m, "encode_support")):
        return False, f"{type(m).__name__} has no encode_query / encode_support (its frozen part is not split from its head)"
    if getattr(m, "frozen_bn_in_train_mode", False):
        return False, "its frozen backbone's BatchNorm runs in train mode (features depend on the batch)"
    return True, ""


@dataclass(frozen=True)
class ViewSpec:
    size: int
    scale: tuple[float, float]
    views: int
    seed: int


def _key_int(key: str) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest()[:15], 16)


def _objects(label: torch.Tensor) -> torch.Tensor:
    return (label != 0) & (label != IGNORE_INDEX)


def view_of(sample: Sample, view: int, spec: ViewSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """View ``view`` of a sample: (3, S, S) float image and (S, S) long class ids (255 = ignore/pad)."""
    rng = np.random.default_rng([spec.seed, _key_int(sample.key), view])
    assert sample.mask is not None, f"sample {sample.key!r} has no mask"  # the training pool's samples all have one
    return train_augment(sample.image, sample.mask, spec.size, rng, spec.scale, foreground=_objects)


def view_choice(seed: int, index: int, shots: int, views: int) -> tuple[int, list[int]]:
    """Which view the query and each support of training episode ``index`` use."""
    rng = np.random.default_rng([seed, index, 7])
    picks = rng.integers(0, views, size=shots + 1)
    return int(picks[0]), [int(v) for v in picks[1:]]


def episode_tensors(sample_view: Callable[[str, int], tuple[torch.Tensor, torch.Tensor]], episode: Episode, seed: int, index: int, views: int) -> dict[str, torch.Tensor]:
    """The uncached inputs of a training episode over fixed views (what ``TrainEpisodes(views=...)`` yields)."""
    qv, svs = view_choice(seed, index, len(episode.supports), views)
    q_img, q_mask = sample_view(episode.query, qv)
    s_imgs, s_masks = [], []
    for key, v in zip(episode.supports, svs):
        img, mask = sample_view(key, v)
        s_imgs.append(img)
        s_masks.append(support_mask(torch.from_numpy(binary_label(mask.numpy(), episode.cls))))
    target = torch.from_numpy(binary_label(q_mask.numpy(), episode.cls).astype(np.int64))
    return {"query": q_img, "target": target, "support_images": torch.stack(s_imgs), "support_masks": torch.stack(s_masks)}


def digest(parts: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


class FeatureCache:
    """Memory-mapped frozen features: ``q.<name>.npy`` rows per (key, view), ``s.<name>.npy`` rows
    per (key, view, class), ``mask.npy`` the view's class ids, ``index.json`` where each row is."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        index = json.loads((self.root / "index.json").read_text())
        if index.get("format") != FORMAT:
            raise ValueError(f"{self.root}/index.json: not a {FORMAT} cache")
        self.info = index
        self.q_rows = {tuple(k): i for k, i in zip(index["q_keys"], range(len(index["q_keys"])))}
        self.s_rows = {tuple(k): i for k, i in zip(index["s_keys"], range(len(index["s_keys"])))}
        self.q = {n: np.load(self.root / f"q.{n}.npy", mmap_mode="r") for n in index["q_names"]}
        self.s = {n: np.load(self.root / f"s.{n}.npy", mmap_mode="r") for n in index["s_names"]}
        self.mask = np.load(self.root / "mask.npy", mmap_mode="r")
        self.views = int(index["views"])

    @staticmethod
    def is_complete(root: Path) -> bool:
        return (Path(root) / "index.json").is_file()

    def query(self, key: str, view: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        i = self.q_rows[(key, view)]
        return {n: torch.from_numpy(np.array(a[i])) for n, a in self.q.items()}, torch.from_numpy(np.array(self.mask[i], dtype=np.int64))

    def support(self, key: str, view: int, cls: int) -> dict[str, torch.Tensor]:
        i = self.s_rows[(key, view, cls)]
        return {n: torch.from_numpy(np.array(a[i])) for n, a in self.s.items()}

    def episode(self, episode: Episode, seed: int, index: int) -> dict[str, torch.Tensor]:
        """A training episode from the cache: ``q.<name>`` (per query), ``s.<name>`` (K, ...) and the target."""
        qv, svs = view_choice(seed, index, len(episode.supports), self.views)
        q, mask = self.query(episode.query, qv)
        supports = [self.support(k, v, episode.cls) for k, v in zip(episode.supports, svs)]
        out = {f"q.{n}": t for n, t in q.items()}
        out.update({f"s.{n}": torch.stack([s[n] for s in supports]) for n in supports[0]})
        out["target"] = torch.from_numpy(binary_label(mask.numpy(), episode.cls).astype(np.int64))
        return out


@torch.no_grad()
def build_cache(
    root: Path, model: torch.nn.Module, source: EpisodeSource, pool: Mapping[int, Sequence[str]], spec: ViewSpec, log: Callable[[str], None] = print,
    store: FeatureStore | None = None,
) -> FeatureCache:
    """Compute every view's frozen features of the images in ``pool`` ({class: keys}) into ``root``
    (written in a temp folder next to it, then renamed: a killed build leaves no half cache).
    With ``store``, every view's features come from the feature store when it has them (another
    fold's pool, another row or bench with the same frozen encoders and views), and go into it."""
    root = Path(root)
    if FeatureCache.is_complete(root):
        return FeatureCache(root)
    m = getattr(model, "module", model)
    m.eval()
    encoders = StoredEncoders(store, m)
    classes_of: dict[str, list[int]] = {}
    for c, keys in sorted(pool.items()):
        for k in keys:
            classes_of.setdefault(k, []).append(int(c))
    keys = sorted(classes_of)
    n_q = len(keys) * spec.views
    n_s = sum(len(classes_of[k]) for k in keys) * spec.views
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    q_arrays: dict[str, np.memmap] = {}
    s_arrays: dict[str, np.memmap] = {}
    masks = np.lib.format.open_memmap(tmp / "mask.npy", mode="w+", dtype=np.uint8, shape=(n_q, spec.size, spec.size))
    q_keys: list[list[str | int]] = []  # [key, view] per query row
    s_keys: list[list[str | int]] = []  # [key, view, class] per support row
    for key in keys:
        sample = source.get(key)
        # one encoder call per image for all its views (and one for all its (view, class)
        # supports): batched, the frozen convs cost ~half as much per image on CPU
        views = [view_of(sample, v, spec) for v in range(spec.views)]
        _put(q_arrays, "q", tmp, encoders("encode_query", torch.stack([img for img, _ in views])), len(q_keys), n_q)
        for v, (_, mask) in enumerate(views):
            masks[len(q_keys)] = mask.numpy().astype(np.uint8)
            q_keys.append([key, v])
        pairs = [(v, c) for v in range(spec.views) for c in classes_of[key]]
        imgs = torch.stack([views[v][0] for v, _ in pairs])
        sms = torch.stack([support_mask(torch.from_numpy(binary_label(views[v][1].numpy(), c))) for v, c in pairs])
        _put(s_arrays, "s", tmp, encoders("encode_support", imgs, sms), len(s_keys), n_s)
        s_keys += [[key, v, c] for v, c in pairs]
        if len(q_keys) % (50 * spec.views) == 0:
            log(f"fit cache: {len(q_keys) // spec.views}/{len(keys)} images")
    for a in (*q_arrays.values(), *s_arrays.values(), masks):
        a.flush()
    atomic_write_json(tmp / "index.json", {
        "format": FORMAT, "views": spec.views, "size": spec.size, "q_names": sorted(q_arrays), "s_names": sorted(s_arrays),
        "q_keys": q_keys, "s_keys": s_keys,
    })  # fmt: skip
    if root.exists():  # another process finished the same cache first
        shutil.rmtree(tmp)
    else:
        tmp.rename(root)
    log(f"fit cache: {len(keys)} images x {spec.views} views -> {root} ({_bytes(root) / 2**20:.0f} MiB)")
    return FeatureCache(root)


def _put(arrays: dict[str, np.memmap], prefix: str, folder: Path, feats: Mapping[str, torch.Tensor], row: int, rows: int) -> None:
    """Rows ``row, row + 1, ...`` of each named array from a batch of features (N, ...)."""
    for name, t in feats.items():
        if name not in arrays:
            arrays[name] = np.lib.format.open_memmap(folder / f"{prefix}.{name}.npy", mode="w+", dtype=np.float32, shape=(rows, *t.shape[1:]))
        arrays[name][row : row + len(t)] = t.float().numpy()


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir())


class CachedTrainEpisodes(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Training episodes by index, from the cache (same indices and views as ``TrainEpisodes(views=...)``)."""

    def __init__(self, cache: FeatureCache, sampler: Callable[[int], Episode], seed: int, indices: Sequence[int]) -> None:
        self.cache, self.sampler, self.seed, self.indices = cache, sampler, seed, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        index = self.indices[i]
        return {**self.cache.episode(self.sampler(index), self.seed, index), "index": torch.tensor(index)}


def split_batch(batch: Mapping[str, torch.Tensor], device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A collated cached batch -> (query features (B, ...), support features (B, K, ...)) on ``device``."""
    q = {k[2:]: v.to(device) for k, v in batch.items() if k.startswith("q.")}
    s = {k[2:]: v.to(device) for k, v in batch.items() if k.startswith("s.")}
    return q, s
