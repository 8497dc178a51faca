"""The key queues: ring-buffer order, checkpoint round trip, and the all-gather over 2 gloo workers."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from glocon.train.queues import KeyQueue, all_gather_varlen


def _keys(start, n, dim=2):
    return torch.arange(start, start + n, dtype=torch.float32)[:, None].repeat(1, dim)


def test_queue_wraps_around_replacing_the_oldest_keys_first():
    q = KeyQueue(5, 2)
    q.enqueue(_keys(0, 3))  # slots 0..2
    q.enqueue(_keys(3, 4))  # 3, 4 then wraps to 0, 1
    assert q.keys[:, 0].tolist() == [5, 6, 2, 3, 4]
    assert q.ptr == 2 and q.count == 7 and q.fill == 1.0


def test_queue_keeps_only_the_newest_keys_when_a_batch_exceeds_its_size():
    q = KeyQueue(4, 2)
    q.enqueue(_keys(0, 1))
    q.enqueue(_keys(10, 6))  # 10..15: only 12..15 stay, written as if in order
    assert sorted(q.keys[:, 0].tolist()) == [12, 13, 14, 15]
    q.enqueue(_keys(20, 1))  # must replace the oldest survivor, 12
    assert sorted(q.keys[:, 0].tolist()) == [13, 14, 15, 20]


def test_queue_fill_counts_real_keys_and_starts_from_seeded_unit_vectors():
    a, b = KeyQueue(8, 4, seed=3), KeyQueue(8, 4, seed=3)
    assert torch.equal(a.keys, b.keys) and torch.allclose(a.keys.norm(dim=1), torch.ones(8))
    assert a.fill == 0.0
    a.enqueue(_keys(0, 2, 4))
    assert a.fill == 0.25


def test_queue_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    q = KeyQueue(6, 3, seed=1)
    q.enqueue(_keys(0, 4, 3))
    torch.save(q.state_dict(), tmp_path / "q.pt")
    r = KeyQueue(6, 3, seed=99)
    r.load_state_dict(torch.load(tmp_path / "q.pt", weights_only=True))
    assert torch.equal(r.keys, q.keys) and (r.ptr, r.count) == (q.ptr, q.count)
    with pytest.raises(ValueError, match="shape"):
        KeyQueue(7, 3).load_state_dict(q.state_dict())


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        # Rank 0 has 2 keys, rank 1 has 3 (the local loss picks a variable number of patches).
        mine = _keys(100 * rank, 2 + rank)
        q = KeyQueue(6, 2, seed=0)
        q.enqueue(_keys(-1, 1))
        added = q.gather_and_enqueue(mine)
        result = {"added": added, "keys": q.keys.clone(), "ptr": q.ptr, "gathered": all_gather_varlen(mine).clone()}
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_all_gather_enqueues_every_workers_keys_in_rank_order_with_gloo(tmp_path):
    world = 2
    # Results come back through files, not an mp.Manager: a Manager forks the pytest process.
    mp.spawn(_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    results = {}
    for rank in range(world):
        r = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        results[rank] = (r["added"], r["keys"], r["ptr"], r["gathered"])
    expected_gathered = torch.cat([_keys(0, 2), _keys(100, 3)])
    for rank in range(world):
        added, keys, ptr, gathered = results[rank]
        assert added == 5 and ptr == 0
        assert torch.equal(gathered, expected_gathered)
        assert keys[:, 0].tolist() == [-1, 0, 1, 100, 101, 102]
    assert torch.equal(results[0][1], results[1][1])  # identical queues on every worker


def test_an_empty_start_offers_only_real_keys_as_negatives():
    q = KeyQueue(5, 2, seed=0)
    assert q.negatives.shape == (0, 2)  # no random vector poses as a negative
    q.enqueue(_keys(0, 3))
    assert q.negatives[:, 0].tolist() == [0, 1, 2]
    q.enqueue(_keys(3, 4))  # full: every slot holds a real key
    assert q.negatives.shape == (5, 2) and torch.equal(q.negatives, q.keys)
    mocos = KeyQueue(5, 2, seed=0, start="random")
    assert mocos.negatives.shape == (5, 2) and mocos.fill == 0.0
    with pytest.raises(ValueError, match="start"):
        KeyQueue(5, 2, start="zeros")


def test_random_initial_negatives_make_the_first_loss_read_far_below_chance():
    """Why the demo's loss climbed (issue 11): against random unit vectors a random positive wins
    at once; against real keys of an untrained encoder (all alike) the loss sits at chance."""
    import math

    from glocon.losses import info_nce

    torch.manual_seed(0)
    base = torch.nn.functional.normalize(torch.randn(1, 128), dim=1)
    alike = lambda n: torch.nn.functional.normalize(base + 0.02 * torch.randn(n, 128), dim=1)  # noqa: E731
    q, k = alike(32), alike(32)
    random_queue = KeyQueue(256, 128, seed=1, start="random")
    real_queue = KeyQueue(256, 128, seed=1)
    real_queue.enqueue(alike(256))
    chance = math.log(257)
    assert info_nce(q, k, random_queue.negatives, 0.2) < 0.3 * chance
    assert info_nce(q, k, real_queue.negatives, 0.2) == pytest.approx(chance, rel=0.05)
