"""One pretraining step: two encoders, both losses, the momentum update and the queues.

BatchNorm across workers
------------------------
MoCo's answer to the BN "cheat" (the key batch's statistics leak which sample is the positive)
is shuffle-BN: gather the key batch, permute it across GPUs, run the key encoder, un-permute.
Its code calls ``.cuda()`` for the permutation and SyncBN only runs on CUDA, so neither runs on
a CPU cluster. glocon keeps the shuffle-BN *algorithm* and drops the device assumption:

- ``bn="shuffle"`` (default): the key images are all-gathered (gloo on CPU, NCCL on GPU), the
  permutation comes from a generator seeded by (seed, step) (``glocon.seeds.shuffle_bn``), so every worker derives the same one
  without a broadcast, each worker encodes its slice on its own device, and the keys are
  all-gathered back and un-permuted. The query encoder keeps per-worker BN, as in MoCo.
- ``bn="local"``: plain per-worker BN (cheaper; what a single worker has anyway: a permutation
  inside one BN batch changes nothing).

With one worker both modes are the same computation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from glocon import seeds
from glocon.device import autocast
from glocon.losses import info_nce, local_patch_pairs, pooled_patch_vectors, total_loss
from glocon.train.queues import KeyQueue, all_gather_varlen


@dataclass
class LossParts:
    """Scalars of Eq. (7) and the keys this step enqueues. keys_*: (N, 128), no grad."""

    total: torch.Tensor
    L_global: torch.Tensor
    L_local: torch.Tensor
    keys_global: torch.Tensor
    keys_local: torch.Tensor
    n_patches: int


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.no_grad()
def shuffled_key_forward(twin: nn.Module, images: torch.Tensor, seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Key encoder on a batch shuffled across workers (shuffle-BN), results in the original order.

    images: (B, 3, S, S) on every worker (same B). Returns k (B, D) and dense (B, D, h, w).
    """
    rank, world = _world()
    if world == 1:
        return twin(images)
    everything = all_gather_varlen(images)  # (world * B, 3, S, S)
    b = images.shape[0]
    g = torch.Generator().manual_seed(seeds.shuffle_bn(seed, step))  # same permutation on every worker
    perm = torch.randperm(everything.shape[0], generator=g).to(images.device)
    k, dense = twin(everything[perm[rank * b : (rank + 1) * b]])
    k_all = all_gather_varlen(k)
    dense_all = all_gather_varlen(dense)
    inverse = torch.argsort(perm)
    return k_all[inverse][rank * b : (rank + 1) * b], dense_all[inverse][rank * b : (rank + 1) * b]


def forward_losses(
    model: nn.Module,
    twin: nn.Module,
    batch: dict[str, torch.Tensor],
    queue_global: KeyQueue,
    queue_local: KeyQueue,
    *,
    tau: float,
    w_global: float,
    w_local: float,
    max_patches: int,
    min_patch_area: float,
    pooling: str = "area",
    bn: str = "shuffle",
    seed: int = 0,
    step: int = 0,
    generator: torch.Generator | None = None,
    amp: bool = False,
) -> LossParts:
    """Query view through ``model`` (grad), key view through ``twin`` (no grad); Eq. (1), (6), (7)."""
    img_q, img_k = batch["image_q"], batch["image_k"]
    device = img_q.device
    with autocast(device, enabled=amp):
        q, dense_q = model(img_q)  # (B, D), (B, D, h, w)
        with torch.no_grad():
            if bn == "shuffle":
                k, dense_k = shuffled_key_forward(twin, img_k, seed, step)
            else:
                k, dense_k = twin(img_k)
    zero = q.new_zeros((), dtype=torch.float32)
    L_global = info_nce(q.float(), k.float(), queue_global.negatives, tau) if w_global else zero  # Eq. (1)
    if w_local:
        pairs = local_patch_pairs(
            batch["labels_q"], batch["labels_k"], tuple(dense_q.shape[-2:]), max_patches, min_patch_area, pooling, generator
        )
        q_p = pooled_patch_vectors(dense_q.float(), pairs.weights_q, pairs.index)  # (N, D)
        with torch.no_grad():
            k_p = pooled_patch_vectors(dense_k.float(), pairs.weights_k, pairs.index)  # positives: same id, other view
        L_local = info_nce(q_p, k_p, queue_local.negatives, tau)  # Eq. (6)
        n_patches = pairs.count
    else:
        L_local, k_p, n_patches = zero, k.new_zeros((0, k.shape[1])), 0
    return LossParts(
        total=total_loss(L_global, L_local, w_global, w_local),  # Eq. (7)
        L_global=L_global.detach(),
        L_local=L_local.detach(),
        keys_global=k.detach().float(),
        keys_local=k_p.detach().float(),
        n_patches=n_patches,
    )
