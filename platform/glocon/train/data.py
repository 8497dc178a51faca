"""Per-worker streams of view pairs from the shards.

Ray Train does not split an IterableDataset across workers, so each worker reads only its own
part of the shards: ``glocon.data.readers.stream_samples`` with the explicit ``rank`` and
``world_size`` of ``ray.train.get_context()`` (shard i goes to rank i % world_size). Workers must
take the same number of steps per epoch (every step ends in collectives), so the loop fixes
``steps_per_epoch = samples // batch_size`` up front and each worker cycles over its own part
(one seeded pass after another) for exactly that many batches.

With ``data.resampled=true`` no rank owns shards: each draws shards with replacement from all of
them (webdataset's resampled mode, seeded per rank and epoch), and ``with_epoch`` bounds the
stream to the samples the epoch needs, as webdataset's documentation does for DDP
(webdataset README, "multinode training": ``resampled=True`` + ``.with_epoch(n)``).
"""

from __future__ import annotations

from collections.abc import Iterator

from glocon import seeds
from glocon.data.readers import stream_samples
from glocon.data.schema import Sample
from glocon.errors import DataError
from glocon.train.views import TwoViews, collate_pairs


def worker_samples(
    urls: list[str], rank: int, world: int, seed: int, shuffle_buffer: int, resampled: bool = False, epoch_samples: int | None = None
) -> Iterator[Sample]:
    """This worker's part of the shards, forever (a new seeded order for every pass); with
    ``resampled``, draws from every shard, ``epoch_samples`` of them (webdataset's ``with_epoch``)."""
    if resampled:
        stream = stream_samples(urls, shuffle_buffer=shuffle_buffer, seed=seed, resampled=True, rank=rank, world_size=world)
        yield from stream.with_epoch(epoch_samples) if epoch_samples else stream
        return
    rounds = 0
    while True:
        n = 0
        for sample in stream_samples(urls, shuffle_buffer=shuffle_buffer, seed=seeds.shard_pass(seed, rounds), epochs=1, rank=rank, world_size=world):
            n += 1
            yield sample
        if n == 0:
            raise DataError(f"worker {rank} of {world} read no sample from its part of {len(urls)} shards")
        rounds += 1


def view_batches(samples: Iterator[Sample], views: TwoViews, method: str, batch: int) -> Iterator[dict]:
    """Samples -> batches of view pairs {image_q, image_k (B, 3, S, S), labels_q, labels_k (B, S, S)}."""
    while True:
        pairs = [views(s.image, s.label_map(method)) for s in (next(samples) for _ in range(batch))]
        yield collate_pairs(pairs)
