"""PretrainConfig: everything one pretraining run needs, in one typed model (YAML + key=value).

Defaults are the paper's and MoCo v2's: resnet50, K = M = 65536, tau = 0.2, m = 0.999,
SGD lr 0.03 x batch / 256, momentum 0.9, weight decay 1e-4, cosine schedule.
``batch_size`` is the GLOBAL batch (MoCo v2: 256 over 8 GPUs); each worker takes its share.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from glocon.config import GloconModel
from glocon.train.faults import FaultSection  # noqa: F401  (re-exported: PretrainConfig.fault)
from glocon.models.prior import PriorArch
from glocon.probe.config import DenseMapName
from glocon.raycluster import RayConfig
from glocon.train.views import ViewConfig


class DataSection(GloconModel):
    shards: str = ""  # a shard folder or its manifest (any glocon.data.shardset spec: also a .tar, a glob, comma-separated tars)
    # Inductive by default: pretraining sees only ``shards``, the split few-shot fit uses. Listing
    # the evaluation split here too is the paper's transductive variant ("all the images in the
    # dataset", Sec. V-A); exports and results then say "transductive".
    extra_shards: list[str] = []
    shuffle_buffer: int = 256
    patch_method: Literal["slic", "fh"] = "slic"  # which superpixel map of the shard feeds L_local
    image_size: int = Field(224, gt=0)  # side of each square view
    samples_per_epoch: int | None = None  # None: counted from the shards once at start
    # true: webdataset's resampled mode (shards drawn with replacement, seeded per rank, epochs of
    # samples_per_epoch / num_workers per rank via with_epoch), which its maintainers recommend for
    # DDP: any number of shards feeds any number of ranks. false: each rank reads its own shards.
    resampled: bool = False


class LossSection(GloconModel):
    tau: float = Field(0.2, gt=0)  # Eq. (1), (6); a temperature: > 0
    w_global: float = 1.0  # Eq. (7); 0 = "local only" (Table VI)
    w_local: float = 1.0  # Eq. (7); 0 = "global only" (Table VI)
    queue_global: int = 65536  # K
    queue_local: int = 65536  # M
    max_patches: int = 16  # P patches per image and step
    min_patch_area: float = 1.0  # in feature-grid cells, in both views
    pooling: Literal["area", "majority"] = "area"  # how the superpixel map meets the feature grid (DetCon)
    # "empty": only real keys are negatives (the loss starts at its honest ln(1 + filled));
    # "random": MoCo's random unit vectors, which make the early loss read low (train/queues.py)
    queue_start: Literal["empty", "random"] = "empty"


class OptimSection(GloconModel):
    base_lr: float = 0.03  # MoCo v2: lr 0.03 at batch 256
    lr: float | None = None  # None: base_lr * batch_size / 256
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = 0.0  # linear warm-up from 0 before the schedule (MoCo v3, SimCLR: 10 epochs)


class EpochProbe(GloconModel):
    """The cheap probe at epoch ends: retrieval mIoU of the epoch's export (glocon.probe), on the dashboard."""

    every_epochs: int = 0  # 0: off
    train_shards: str = ""  # labelled memory images; empty: data.shards
    val_shards: str = ""  # labelled images it is scored on; empty: a held-out share of train_shards
    limit: int | None = 120  # images per split: the probe must stay cheap beside training
    input_size: int = Field(160, gt=0)
    map: DenseMapName = "prior"


class CheckpointSection(GloconModel):
    every_steps: int = 500  # plus one at every epoch end
    num_to_keep: int | None = 3  # Ray's retention; the per-epoch exports below are kept apart
    epoch_exports: bool = True  # write <storage>/<name>/epochs/epoch-XXXX/{prior.pt,metrics.json}


class PretrainConfig(GloconModel):
    name: str = "pretrain"
    storage_path: str = "runs/pretrain"
    seed: int = 0
    epochs: int = 200
    batch_size: int = Field(256, gt=0)  # global, over all workers
    num_workers: int = Field(2, gt=0)
    use_gpu: bool | None = None  # None: use CUDA when present
    cpus_per_worker: float = 1.0
    max_failures: int = 3
    model: PriorArch = PriorArch()
    momentum: float = 0.999  # m of the momentum twin
    bn: Literal["shuffle", "local"] = "shuffle"  # see glocon.train.step for why
    # backbone stages up to this one keep their init weights and BN statistics (Backbone.freeze_):
    # continued pretraining from ImageNet weights trains only the last stages and the heads
    freeze: Literal["none", "stem", "layer1", "layer2", "layer3"] = "none"
    freeze_bn_stats: bool = False  # every backbone BatchNorm keeps its init running statistics
    amp: bool = True  # CUDA only
    data: DataSection = DataSection()
    views: ViewConfig = ViewConfig()
    loss: LossSection = LossSection()
    optim: OptimSection = OptimSection()
    checkpoint: CheckpointSection = CheckpointSection()
    fault: FaultSection = FaultSection()
    probe: EpochProbe = EpochProbe()
    stop_at_step: int | None = None  # checkpoint and stop after this global step; rerun to go on
    log_every_s: float = 5.0
    ray: RayConfig = RayConfig()

    @model_validator(mode="after")
    def _check(self) -> "PretrainConfig":
        if self.batch_size % self.num_workers:
            raise ValueError(f"batch_size={self.batch_size} must be divisible by num_workers={self.num_workers}")
        if self.loss.w_global == 0 and self.loss.w_local == 0:
            raise ValueError("loss.w_global and loss.w_local are both 0: nothing to train")
        return self

    @property
    def per_worker_batch(self) -> int:
        return self.batch_size // self.num_workers

    @property
    def lr(self) -> float:
        return self.optim.lr if self.optim.lr is not None else self.optim.base_lr * self.batch_size / 256

    @property
    def protocol(self) -> str:
        """``inductive`` (only the fit split's images) or ``transductive`` (evaluation images too)."""
        return "transductive" if self.data.extra_shards else "inductive"

    @property
    def run_dir(self) -> Path:
        return Path(self.storage_path).expanduser().resolve() / self.name
