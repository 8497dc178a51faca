"""Ring buffers of negative keys: the global queue (K image keys, Eq. 1) and the local queue
(M patch keys, Eq. 6).

Every worker holds a full copy of both queues. Keys are all-gathered across workers before they
are enqueued (MoCo's ``concat_all_gather``), so all copies stay identical; lightly's memory bank
once skipped this gather and each worker drew negatives from its own slice only. The gather
handles a different number of keys per worker (the local loss picks a variable number of
patches) by padding to the largest count, which gloo (CPU) and NCCL (GPU) both accept.

Why a queue starts empty
------------------------
MoCo fills its ``queue`` buffer with random unit vectors. A random 128-d unit vector is nearly
orthogonal to every real key, so against such "negatives" the positive wins at once: at tau 0.2
with 256 random negatives the loss starts near log(1 + 256 e^-5) = 1.0, far under chance
(ln 257 = 5.55). As real keys replace them (within K / batch steps), the loss *rises* toward
chance whether or not anything is learned. That is the climb measured in the demo (L_global
1.4 -> 5.0 over its first steps, issue 11): an artefact of the initial negatives, not of training.
So by default (``start="empty"``) only real keys are negatives: ``negatives`` is the filled part
of the buffer, and the loss starts at its honest value, ln(1 + filled). ``start="random"`` keeps
MoCo's behaviour (seeded, so every worker starts from the same vectors); ``fill`` says which
share of the slots holds real keys either way.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _dist_ready() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def all_gather_varlen(x: torch.Tensor) -> torch.Tensor:
    """(n_r, D) on each rank r -> (sum_r n_r, D) on every rank, in rank order. No gradient.

    Works with a different n_r per rank (padded to max n_r for the collective); a no-op
    without an initialised process group of size > 1.
    """
    if not _dist_ready():
        return x
    world = dist.get_world_size()
    n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    counts = [int(s.item()) for s in sizes]
    width = max(counts)
    padded = x.new_zeros((width, *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:c] for p, c in zip(parts, counts)], dim=0)


class KeyQueue:
    """A ring buffer of ``size`` keys of ``dim`` floats: the oldest keys are replaced first.

    keys: (size, dim); ``ptr`` is the next slot to write; ``count`` counts every key ever enqueued.
    """

    def __init__(self, size: int, dim: int, seed: int = 0, device: torch.device | str = "cpu", start: str = "empty") -> None:
        if size <= 0 or dim <= 0:
            raise ValueError(f"queue size and dim must be positive, got size={size} dim={dim}")
        if start not in ("empty", "random"):
            raise ValueError(f"queue start {start!r}: expected 'empty' or 'random'")
        g = torch.Generator().manual_seed(seed)
        self.keys = F.normalize(torch.randn(size, dim, generator=g), dim=1).to(device)
        self.start = start
        self.ptr = 0
        self.count = 0

    @property
    def size(self) -> int:
        return int(self.keys.shape[0])

    @property
    def negatives(self) -> torch.Tensor:
        """The keys the loss contrasts against: (n, dim). With ``start="empty"`` only the slots
        real keys have filled (the ring writes slot 0, 1, ... first); all slots once full or with
        ``start="random"``."""
        if self.start == "random" or self.count >= self.size:
            return self.keys
        return self.keys[: self.count]

    @property
    def fill(self) -> float:
        """Share of slots holding real keys (not the random initial ones), in [0, 1]."""
        return min(self.count, self.size) / self.size

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write (n, dim) keys at ``ptr``, wrapping around; with n > size only the last ``size`` stay."""
        keys = keys.detach().to(self.keys.device, self.keys.dtype)
        n = keys.shape[0]
        if n == 0:
            return
        if n > self.size:
            self.ptr = (self.ptr + n - self.size) % self.size
            self.count += n - self.size
            keys = keys[-self.size :]
            n = self.size
        slots = (self.ptr + torch.arange(n, device=self.keys.device)) % self.size
        self.keys[slots] = keys
        self.ptr = (self.ptr + n) % self.size
        self.count += n

    @torch.no_grad()
    def gather_and_enqueue(self, keys: torch.Tensor) -> int:
        """All-gather ``keys`` across workers, then enqueue them all; returns how many were added."""
        gathered = all_gather_varlen(keys.detach())
        self.enqueue(gathered)
        return int(gathered.shape[0])

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        return {"keys": self.keys.detach().cpu().clone(), "ptr": int(self.ptr), "count": int(self.count)}

    def load_state_dict(self, state: dict) -> None:
        keys = state["keys"]
        if tuple(keys.shape) != tuple(self.keys.shape):
            raise ValueError(f"queue state has shape {tuple(keys.shape)}, this queue is {tuple(self.keys.shape)}")
        self.keys = keys.to(self.keys.device, self.keys.dtype).clone()
        self.ptr = int(state["ptr"])
        self.count = int(state["count"])
