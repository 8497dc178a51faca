"""ProbeConfig: which priors to judge, on which labelled shards, with which knobs (YAML + key=value)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from glocon.config import GloconModel
from glocon.featstore.store import StoreConfig

# the dense maps of a prior the probe reads (glocon.models.prior.DenseMap)
DenseMapName = Literal["prior", "backbone", "local_head"]


class RetrievalSection(GloconModel):
    """Dense NN retrieval (open-hummingbird-eval's defaults: k 30, temperature 0.02)."""

    enabled: bool = True
    k: int = Field(30, ge=1)
    temperature: float = Field(0.02, gt=0)
    memory_size: int | None = None  # cells kept in the memory (seeded draw); None: every labelled train cell


class LinearSection(GloconModel):
    enabled: bool = True
    epochs: int = Field(30, ge=1)
    lr: float = Field(1e-2, gt=0)
    weight_decay: float = 1e-4
    batch_size: int = Field(32, ge=1)


class PriorMapSection(GloconModel):
    """Separability of the prior region map (Eq. 9-12) between a frozen F and the prior."""

    enabled: bool = True
    f: str = "imagenet:efficientnet_lite0"  # the feature extractor F, as an encoder spec (glocon.probe.features)
    f_map: DenseMapName = "backbone"  # F's layer4, as the QGNet release's prior map uses
    # lstsq: map the prior into F's space first (least squares on the train cells, no labels); none: literal Eq. 9
    align: Literal["lstsq", "none"] = "lstsq"


class PuritySection(GloconModel):
    """Balanced class purity of superpixel embeddings on the val images (glocon.bank.stats)."""

    enabled: bool = True
    patch_method: Literal["slic", "fh"] = "slic"
    k: int = Field(10, ge=1)
    per_class: int = Field(50, ge=1)
    min_dominant_frac: float = 0.5
    background_class: int | None = 0


class ProbeConfig(GloconModel):
    # name -> encoder spec: an export path, init:<export>, random:<export> or imagenet:<backbone>[@stride]
    priors: dict[str, str] = {}
    # a pretraining run folder: every epochs_every-th per-epoch export (epochs/epoch-XXXX/prior.pt) is
    # probed too, with "init:" of the run as epoch 0; the figures are plotted against epoch
    run: str | None = None
    epochs_every: int = Field(1, ge=1)
    # probe: every chosen epoch export is probed here (every figure, every seed); pretraining: the
    # retrieval mIoU the run's own epoch-end probe recorded (probe.every_epochs) is read, not recomputed
    epochs_from: Literal["probe", "pretraining"] = "probe"
    train_shards: str = ""  # labelled shards the memory / linear probe learn from
    val_shards: str = ""  # labelled shards they are scored on; empty: a held-out share of train_shards
    val_fraction: float = Field(0.3, gt=0, lt=1)  # with one shard set: share of keys (by a stable hash) held out
    limit: int | None = None  # at most this many images per split (smoke runs)
    map: DenseMapName = "prior"
    input_size: int = Field(160, ge=16)  # square side every image is resized to
    n_classes: int | None = None  # None: the largest class id in the masks + 1
    seeds: list[int] = [0, 1, 2]  # every figure with randomness is repeated over these
    batch_size: int = Field(16, gt=0)
    retrieval: RetrievalSection = RetrievalSection()
    linear: LinearSection = LinearSection()
    prior_map: PriorMapSection = PriorMapSection()
    purity: PuritySection = PuritySection()
    out: str = "runs/probe"
    store: StoreConfig = StoreConfig()  # where frozen maps are kept across seeds and runs (glocon.featstore)

    @model_validator(mode="after")
    def _check(self) -> "ProbeConfig":
        if not self.seeds:
            raise ValueError("seeds: give at least one seed")
        return self
