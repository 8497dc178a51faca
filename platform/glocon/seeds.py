"""Every seed glocon derives from a config's ``seed``, named and defined in this one module.

New seeds are hashed from a tag (``derive``, ``rng_for``): two streams with different tags never
share a seed, whatever the numbers. The older ones keep their arithmetic formulas, because
recorded results and tests depend on their values; each is checked below not to collide with
another one in the range it is used in. The one that did collide, the shuffle-BN permutation
(``seed * 1_000_003 + step``, equal to the patch-sampling seed of step 1, rank 0 at step 97), is
now hashed from its tag.
"""

from __future__ import annotations

import hashlib
import random


def derive(seed: int, tag: str, *parts: int) -> int:
    """A 63-bit seed hashed from ``seed``, ``tag`` and ``parts``: the same on every machine."""
    text = "/".join([str(seed), tag, *(str(p) for p in parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def rng_for(tag: str) -> random.Random:
    """A Python RNG seeded by a hash of ``tag`` (few-shot episodes: one tag per file and index)."""
    return random.Random(int(hashlib.sha256(tag.encode()).hexdigest()[:16], 16))


# -- Ray Train workers (pretraining and few-shot fit) ------------------------------------------
def weights(seed: int) -> int:
    """The initial weights: the same on every worker (DDP then broadcasts rank 0's anyway)."""
    return seed


def worker(seed: int, rank: int) -> int:
    """Each worker's own torch stream after the weights (views, dropout): rank r of every run."""
    return seed * 1000 + rank + 1


# -- pretraining ---------------------------------------------------------------------------------
def queue(seed: int, which: str) -> int:
    """The random start of a key queue (``queue_start=random``): ``global`` or ``local``."""
    return seed + {"global": 1, "local": 2}[which]


def epoch_stream(seed: int, epoch: int, first_step: int) -> int:
    """The shard and sample order of an epoch's stream that starts at its step ``first_step``."""
    return seed * 100_003 + epoch * 1_009 + first_step


def patch_sampling(seed: int, step: int, rank: int) -> int:
    """Which superpixels of a step's views reach L_local, per rank (< 97 ranks: no two (step, rank) share it)."""
    return seed * 1_000_003 + step * 97 + rank


def shuffle_bn(seed: int, step: int) -> int:
    """The shuffle-BN permutation of a step's key batch: the same on every worker."""
    return derive(seed, "shuffle-bn", step)


# -- reading shards ------------------------------------------------------------------------------
def sample_shuffle(seed: int) -> int:
    """The sample shuffle buffer's stream, apart from the shard shuffle's (which uses ``seed``)."""
    return seed + 1_000_003


def shard_pass(seed: int, rounds: int) -> int:
    """A worker's ``rounds``-th pass over its own shards within one epoch stream."""
    return seed + rounds


def resampled_worker(rank: int, loader_worker: int) -> int:
    """webdataset's own worker seed for resampled shards (``pytorch_worker_seed``), with our rank."""
    return rank * 1000 + loader_worker
