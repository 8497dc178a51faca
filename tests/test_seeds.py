"""glocon.seeds: every derived seed in one place, and no two streams that share one."""

from __future__ import annotations

from glocon import seeds


def test_derive_is_stable_and_tag_separated():
    assert seeds.derive(0, "a", 1) == seeds.derive(0, "a", 1)
    assert seeds.derive(0, "a", 1) != seeds.derive(0, "b", 1)
    assert seeds.derive(0, "a", 1) != seeds.derive(0, "a", 2)
    assert 0 <= seeds.derive(123, "x") < 2**63


def test_patch_sampling_never_collides_within_its_range():
    # one seed per (step, rank) for every rank below 97
    got = {seeds.patch_sampling(0, step, rank) for step in range(2000) for rank in range(8)}
    assert len(got) == 2000 * 8


def test_shuffle_bn_no_longer_equals_a_patch_sampling_seed():
    # the old formula seed * 1_000_003 + step gave step 97's permutation the seed of step 1, rank 0
    patch = {seeds.patch_sampling(s, step, rank) for s in range(3) for step in range(500) for rank in range(4)}
    assert not patch & {seeds.shuffle_bn(s, step) for s in range(3) for step in range(500)}
    assert seeds.shuffle_bn(0, 97) != seeds.patch_sampling(0, 1, 0)


def test_rng_for_is_reproducible_per_tag():
    assert seeds.rng_for("fold0/seed1").random() == seeds.rng_for("fold0/seed1").random()
    assert seeds.rng_for("fold0/seed1").random() != seeds.rng_for("fold0/seed2").random()
