"""``data.resampled=true``: webdataset's resampled mode lets one shard feed two Ray Train workers.

Without it the same run is refused before Ray starts (tests/test_hostile_inputs.py,
tests/test_preflight.py); with it both ranks draw from the one shard, seeded per rank, and every
epoch has exactly its steps.
"""

from __future__ import annotations

import pytest

from glocon.config import load_config
from glocon.models.prior import read_export
from glocon.train.config import PretrainConfig
from glocon.train.pretrain import run_pretraining

from pretrain_shards import write_photo_shards


@pytest.mark.slow
@pytest.mark.realdata
def test_one_shard_feeds_two_workers_in_resampled_mode_for_every_step_of_every_epoch(coco128, tmp_path, ray_session):
    (shard,) = write_photo_shards(coco128 / "images" / "train2017", tmp_path / "one", n_images=16, per_shard=16, side=64)
    cfg = load_config(PretrainConfig, None, [
        f"storage_path={tmp_path / 'runs'}", "name=resampled", "num_workers=2", "batch_size=8", "epochs=2", "use_gpu=false",
        "model.backbone=resnet18", "model.hidden_dim=64", f"data.shards={shard.parent}", "data.image_size=64",
        "data.resampled=true", "data.shuffle_buffer=8", "loss.queue_global=16", "loss.queue_local=64",
        "loss.max_patches=4", "loss.min_patch_area=0.25", "checkpoint.every_steps=100", "log_every_s=2", "max_failures=0",
    ])  # fmt: skip
    out = run_pretraining(cfg)
    assert out.result.error is None
    steps = [m["step"] for m in out.history if m.get("event") is None]
    assert steps == [1, 2, 3, 4]  # 16 samples / 8 per global batch x 2 epochs, from one shard on two ranks
    assert read_export(out.export_path)["extra"]["step"] == 4
