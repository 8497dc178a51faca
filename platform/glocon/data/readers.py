"""Reading shards: a stream for training; random access by key for few-shot episodes is
``glocon.data.shardindex``. What is said here holds for both. Which shards a spec names (a
folder, manifest, glob or tar list) is ``glocon.data.shardset``'s to say.

Both decode members with ``glocon.data.schema.decode_sample``, never webdataset's
``.decode("rgb")``: that turns a PNG mask into a float RGB array in [0, 1] and the class ids are
lost (issue 3, measured). Both refuse hostile tars: a member whose name is absolute or contains
``..`` is a ``DataError`` naming the shard and the member (a reader never extracts, but a name like
that only comes from a tool that should not be trusted), and so is a truncated tar.

Both verify content by default (``verify=True``): the first time a process opens a shard, its
sha256 is checked against the manifest (``glocon.data.verify``), so a shard whose bytes changed at
the same size is an error naming it, not a silently different image. The stream checks in its
url-level stage, before the tar is opened; ``ShardIndex`` checks before it reads a sample.
"""

from __future__ import annotations

import os
import tarfile
from itertools import islice
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Iterator, Sequence

from glocon import seeds
from glocon.data.schema import Sample, decode_sample
from glocon.data.verify import check_shard, expected_shas
from glocon.errors import DataError

BLOCK = 512  # tar block size; an archive ends with two zero blocks


# ---------------------------------------------------------------------------------------------
# Tar sanity (shard lists: glocon.data.shardset)
# ---------------------------------------------------------------------------------------------


def unsafe_member(name: str) -> bool:
    """An absolute name or one with a ``..`` component would escape the folder it is extracted to."""
    path = PurePosixPath(name.replace("\\", "/"))
    return path.is_absolute() or ".." in path.parts


def check_tar_end(path: str | os.PathLike) -> None:
    """A finished tar is whole blocks ending in two zero blocks; anything else was cut short.

    Python's ``tarfile`` treats a file that stops at a header boundary as a shorter, valid
    archive, so a truncated shard would silently lose samples without this check.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            fh.seek(max(size - 2 * BLOCK, 0))
            tail = fh.read(2 * BLOCK)
    except OSError as exc:
        raise DataError(f"shard {p}: cannot read ({exc})") from None
    if size < 2 * BLOCK or size % BLOCK or tail.count(0) != len(tail):
        raise DataError(f"shard {p}: truncated tar ({size} bytes, no end-of-archive marker)")


def _is_local(url: str) -> bool:
    return "://" not in url and not url.startswith("pipe:")


# ---------------------------------------------------------------------------------------------
# Streaming (training)
# ---------------------------------------------------------------------------------------------


class _Deferred(DataError):
    """Raised inside webdataset's tar iterator, which does not know the shard; re-raised with it."""


class _UnsafeMember(DataError):
    pass


def _refuse_unsafe(name: str) -> str:
    """``rename_files`` hook: webdataset calls it with every regular member's name."""
    if unsafe_member(name):
        raise _UnsafeMember(f"tar member {name!r} has an absolute path or '..' (refused)")
    return name


def _reason(exn: BaseException) -> str:
    # webdataset appends " @ <stream>" to the first arg; the shard is named by the caller instead.
    first = str(exn.args[0]).split(" @ ")[0] if exn.args else type(exn).__name__
    if isinstance(exn, DataError):
        return getattr(exn, "reason", None) or first
    if isinstance(exn, (tarfile.TarError, EOFError)):
        return f"truncated or corrupt tar ({first})"
    return f"{type(exn).__name__}: {first}"


class _ShardErrors:
    """webdataset ``handler``: turn any failure into a DataError that names the shard.

    webdataset calls the handler twice for an error inside a tar: first in ``tar_file_iterator``
    (which only knows the stream), then in ``tar_file_expander``, which appends the url to the
    exception's args. The first call defers, the second names the shard.
    """

    def __init__(self, urls: Sequence[str]):
        self.urls = set(urls)

    def __call__(self, exn: BaseException) -> bool:
        url = next((a for a in reversed(exn.args) if isinstance(a, str) and a in self.urls), None)
        reason = _reason(exn)
        if url is None:
            err = _Deferred(reason)
            err.reason = reason
            raise err from exn
        raise DataError(f"shard {url}: {reason}") from exn


class _Split:
    """Explicit node split (rank, world_size) for callers outside torch.distributed; picklable."""

    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size = rank, world_size

    def __call__(self, src: Iterable[dict]) -> Iterator[dict]:
        yield from islice(src, self.rank, None, self.world_size)


class _RankSeed:
    """``ResampledShards`` worker seed for an explicit rank: webdataset's own formula
    (``utils.pytorch_worker_seed``: rank * 1000 + DataLoader worker), with our rank instead of
    torch.distributed's, so each rank and worker draws its own seeded sequence of shards."""

    def __init__(self, rank: int):
        self.rank = rank

    def __call__(self) -> int:
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        return seeds.resampled_worker(self.rank, info.id if info is not None else 0)


class _CheckedShards:
    """Worker split, then, for each local shard this worker will read and before its tar is
    opened: the truncation check, and the content check against the manifest (``expected``)."""

    def __init__(self, worker_split: Callable | None, expected: dict[str, tuple[str, str]]):
        self.worker_split = worker_split
        self.expected = expected

    def __call__(self, src: Iterable[dict]) -> Iterator[dict]:
        for item in self.worker_split(src) if self.worker_split else src:
            url = item["url"]
            if _is_local(url):
                check_tar_end(url)
            if url in self.expected:
                check_shard(url, *self.expected[url])
            yield item


def _decode(raw: dict[str, Any]) -> Sample:
    return decode_sample(raw, shard=str(raw.get("__url__", "")))


def stream_samples(
    urls: Sequence[str],
    *,
    shuffle_buffer: int = 0,
    seed: int = 0,
    epochs: int = 1,
    split_by_node: bool = True,
    split_by_worker: bool = True,
    resampled: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
    verify: bool = True,
):
    """A ``webdataset.WebDataset`` of decoded ``Sample`` objects (an IterableDataset).

    urls: shard paths (``glocon.data.shardset.ShardSet.open(spec).stream()`` reads a folder,
    manifest, glob or tar list). Shards are split across nodes with
    webdataset's ``split_by_node`` (torch.distributed rank, which Ray Train initialises) or, when
    ``rank`` and ``world_size`` are given, by that explicit rank; then across DataLoader workers
    with ``split_by_worker``. ``shuffle_buffer > 0`` shuffles the shard order and the samples
    (seeded, a new order each epoch). ``resampled=True`` draws shards with replacement forever,
    seeded per rank and worker, with no split (webdataset's recommended DDP mode: any number of
    shards feeds any number of ranks; bound an epoch with ``.with_epoch(n)``); ``epochs`` is then
    ignored. ``verify``: check each shard's sha256 against its folder's manifest (once per process).
    """
    import webdataset as wds

    if isinstance(urls, (str, os.PathLike)):
        raise DataError(f"stream_samples: {urls}: give shard urls, or read a folder or manifest with ShardSet.open(spec).stream()")
    urls = [str(u) for u in urls]
    if not urls:
        raise DataError("stream_samples: no shard urls given")
    nodesplitter = _node_splitter(urls, rank, world_size, split_by_node, resampled)
    expected = expected_shas(urls) if verify else {}
    worker_split = wds.split_by_worker if split_by_worker and not resampled else None
    ds = wds.WebDataset(
        urls,
        handler=_ShardErrors(urls),
        resampled=resampled,
        shardshuffle=len(urls) if shuffle_buffer > 0 and not resampled else False,
        detshuffle=True,
        seed=seed,
        nodesplitter=nodesplitter,
        workersplitter=_CheckedShards(worker_split, expected),
        rename_files=_refuse_unsafe,
        empty_check=False,
    )
    if resampled:
        # WebDataset(resampled=True) seeds from the clock; seed it (per rank/worker, per epoch).
        worker_seed = _RankSeed(rank) if rank is not None else None
        ds.pipeline[0] = wds.ResampledShards(urls, seed=seed, deterministic=True, worker_seed=worker_seed)
    if shuffle_buffer > 0:
        # A seed apart from the shard shuffle's, so the two orders are not drawn from one stream.
        ds.append(wds.detshuffle(shuffle_buffer, initial=min(shuffle_buffer, 100), seed=seeds.sample_shuffle(seed)))
    ds = ds.map(_decode)
    if not resampled and epochs != 1:
        ds = ds.repeat(nepochs=epochs)
    return ds


def _node_splitter(urls: list[str], rank: int | None, world_size: int | None, split_by_node: bool, resampled: bool) -> Callable | None:
    """How shards are split over ranks: an explicit rank, torch.distributed's, or (resampled) not at all."""
    import webdataset as wds

    if (rank is None) != (world_size is None):
        raise DataError("stream_samples: give both rank and world_size, or neither")
    if world_size is not None and not 0 <= rank < world_size:
        raise DataError(f"stream_samples: rank {rank} is not in [0, {world_size})")
    if resampled:
        return None  # every rank draws its own seeded sequence of shards
    if world_size is not None:
        if len(urls) < world_size:
            raise DataError(
                f"{len(urls)} shard(s) cannot be split over {world_size} ranks (num_workers): each rank needs a "
                "shard of its own. Rerun make_shards with a smaller samples_per_shard, or set data.resampled=true"
            )
        return _Split(rank, world_size)
    return wds.split_by_node if split_by_node else None
