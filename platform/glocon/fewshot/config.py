"""The few-shot job's typed config: data and splits, fit, evaluation, objective (YAML + key=value).

Defaults are the reference code's (``dvlab-research/PFENet``, and the QGNet release that copies
it): SGD, base lr 0.0025, momentum 0.9, weight decay 1e-4, poly(0.9) decay, batch 4, and every new
layer at 10 x the base lr. The config files say 0.0025 but PFENet's ``train.py`` calls
``poly_learning_rate(..., index_split=-1)`` and ``util.poly_learning_rate`` multiplies every param
group above ``index_split`` by ``scale_lr=10``, so every trained layer runs at 0.025.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from glocon.featstore.store import StoreConfig
from glocon.config import GloconModel
from glocon.fewshot.episodes import DEFAULT_EPISODES, DEFAULT_SEED
from glocon.raycluster import RayConfig
from glocon.train.faults import FaultSection

Shards = str | list[str] | None


class FewShotData(GloconModel):
    shards: Shards = None  # the FIT split: shard folder(s) or manifest.json(s) (make_shards output), merged
    benchmark: Literal["pascal", "coco", "fss", "embedded"] = "embedded"
    folds: list[int] = [0, 1, 2, 3]  # fss: ignored (the test split is the one "fold", 0)
    coco_split: Literal["interleaved", "contiguous"] = "interleaved"
    fss_split_dir: str | None = None  # HSNet's data/splits/fss (trn/val/test.txt)
    # Explicit class lists override the benchmark's fold split (custom data); base defaults to "all others".
    novel_classes: list[int] | None = None
    base_classes: list[int] | None = None


class CacheConfig(GloconModel):
    """The frozen-feature cache of fit (``glocon.fewshot.cache``): F and F_p are frozen, so their
    features of a fixed set of augmented views per image are computed once and memory-mapped."""

    enabled: bool = True  # used when the plugin's model can split frozen encoders from its head
    views: int = Field(default=4, ge=1)  # augmented views (PFENet's scale, flip, crop) drawn once per image
    dir: str | None = None  # None: <fit.storage_path>/cache


class FitConfig(GloconModel):
    # the training seed: initial weights, episode order, dropout. None: the run's ``seed``. Base-val,
    # the cached views and the eval episodes stay on ``seed``, so fits that differ only here are
    # scored on the same episodes and read the same feature cache (bench/fewshot_table.py --fit-seeds)
    seed: int | None = None
    steps: int | None = None  # total optimiser steps per model; or give epochs
    epochs: float | None = None  # passes over the base-class query images (PFENet: 200 on PASCAL)
    batch_size: int = Field(default=4, gt=0)  # global, split over workers (PFENet / paper: 4)
    # one model per shot, as PFENet and QGNet train (HSNet trains 1-shot only and tests both)
    shots: list[int] = [1, 5]
    lr: float = 0.0025  # PFENet's base_lr
    lr_scale: float = 10.0  # PFENet's scale_lr on every new layer (the module docstring says why)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    power: float = 0.9  # poly decay: lr * (1 - step / steps) ** power
    scale: tuple[float, float] = (0.9, 1.1)  # PFENet's RandScale
    num_workers: int = Field(default=1, gt=0)  # Ray Train workers (DDP when > 1)
    cpus_per_worker: int = 1
    loader_workers: int = 0  # torch DataLoader processes per Ray worker
    storage_path: str = "runs/fewshot"
    name: str = "fit"  # run name; fold f, K shots trains as "<name>-fold<f>-<K>shot"; rerun the same name to resume
    max_failures: int = 0
    checkpoint_every: int = 100  # steps
    num_to_keep: int | None = 2  # Ray's checkpoint retention (the newest two: a damaged newest one falls back to the other)
    stop_at_step: int | None = None  # end this run early after a checkpoint (tests; rerun the same name to resume)
    # Base-val (glocon.fewshot.baseval): images of the FIT split held out from training, scored on
    # base classes every eval_every steps; fit keeps the best weights and stops after `patience`
    # evaluations without a gain (None: runs to `steps`, the cap). Novel classes are never read.
    val_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)  # 0: no base-val (the last weights are kept)
    eval_every: int = Field(default=100, ge=1)  # steps between base-val evaluations
    patience: int | None = Field(default=None, ge=1)
    val_episodes: int = Field(default=100, ge=1)  # base-val episodes scored at every evaluation
    # Fit images that hold a novel class: "drop" (glocon: novel classes are never seen before the
    # final eval) or "background" (PFENet's training list: kept, the novel pixels labelled
    # background). Base-val draws from novel-free images either way.
    novel_images: Literal["drop", "background"] = "drop"
    train_eval_episodes: int = Field(default=50, ge=0)  # base-train episodes scored beside them (the curve's memorising side)
    fault: FaultSection = FaultSection()  # drills: SIGKILL a worker once at a step (glocon.train.faults)
    cache: CacheConfig = CacheConfig()

    @field_validator("shots", mode="before")
    @classmethod
    def _shots_list(cls, v: object) -> object:
        return [v] if isinstance(v, int) else v

    @model_validator(mode="after")
    def _check(self) -> "FitConfig":
        if self.batch_size % self.num_workers:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of num_workers {self.num_workers}")
        if not self.shots or any(k < 1 for k in self.shots):
            raise ValueError(f"fit.shots: expected a list of shot counts >= 1, got {self.shots}")
        return self

    @property
    def effective_lr(self) -> float:
        return self.lr * self.lr_scale


class EvalConfig(GloconModel):
    # the EVAL split (VOC val / COCO val / the embedded val split); None: data.shards, which the
    # results then flag as "evaluated on the fit split" (no benchmark does that)
    shards: Shards = None
    episodes: int = DEFAULT_EPISODES  # per fold, shot and seed (HSNet / BAM: 1000; PFENet: 5000 PASCAL, 20000 COCO)
    shots: list[int] = [1, 5]
    # BAM and HDMNet report the mean over 5 / 10 seeds of 1000 episodes: an int n means seeds
    # seed, seed + 1, ..., seed + n - 1 (one episode file each); or give the list
    seeds: int | list[int] = 5
    bootstrap: int = Field(default=2000, ge=0)  # resamples for the 95% CI (0: none)
    batch_size: int = Field(default=1, gt=0)
    # encode each image once per evaluation (a model with frozen encoders: glocon.fewshot.encoded);
    # false runs the encoders on every episode, as a check that both give the same scores
    encode_once: bool = True
    n_figure_episodes: int = 4
    out_dir: str = "runs/fewshot/eval"
    weights: str | None = None  # a fit's model.pt (one fold and shot) or a folder with fold<f>-<K>shot/model.pt; default: fit's output
    allow_untrained: bool = False  # score a trainable plugin with no trained weights (benches, smoke tests)
    # score a model fitted on another class split (its novel classes differ): refused by default,
    # since the model may have trained on what it is scored on; when allowed, results say so
    allow_split_mismatch: bool = False


class ObjectiveConfig(GloconModel):
    fold: int | None = None  # default: the first of data.folds
    episodes: int = 100
    shots: int = 1
    fit_steps: int = 0  # a trainable plugin first trains this many steps on base classes (in-process)


class FewShotConfig(GloconModel):
    plugin: str | None = None  # the CLI's --plugin wins
    model: dict[str, Any] = Field(default_factory=dict)  # validated by the plugin's config_model
    prior: str | None = None  # prior extractor export (pretraining output)
    data: FewShotData = FewShotData()
    image_size: int = Field(default=473, gt=0)  # PFENet / paper; the CPU demo uses less
    seed: int = DEFAULT_SEED
    episodes_dir: str = "runs/fewshot/episodes"  # shared by every model, so all compare on the same episodes
    device: Literal["auto", "cpu", "cuda"] = "auto"
    fit: FitConfig = FitConfig()
    eval: EvalConfig = EvalConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    ray: RayConfig = RayConfig()
    store: StoreConfig = StoreConfig()  # where frozen features are kept across runs (glocon.featstore)

    @property
    def fit_seed(self) -> int:
        return self.seed if self.fit.seed is None else self.fit.seed

    @property
    def eval_seeds(self) -> list[int]:
        s = self.eval.seeds
        return list(s) if isinstance(s, list) else [self.seed + i for i in range(s)]
