"""The sweep config and its search space, declared in YAML and validated like every config.

A sweep varies the few pretraining knobs the paper ablates by hand (tau, patch method,
epochs, the global/local loss weights; Tables V and VI) and scores each prior downstream.
Every dimension given as a list or a ``grid`` becomes a ``tune.grid_search``; tau can also be
``loguniform: {low, high}``, then ``num_samples`` draws are made per grid point.

Each dimension is written into the base pretraining config at a dotted path (``targets``),
checked against the pretraining config model before any trial starts, so a typo in a path
fails at load time and names the key, as does an unknown key in ``space`` itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from glocon.config import GloconModel, all_keys, load_config, parse_override, validate_config
from glocon.errors import ConfigError
from glocon.probe.config import DenseMapName
from glocon.raycluster import RayConfig

if TYPE_CHECKING:  # annotations only
    from glocon.train.config import PretrainConfig

PatchMethod = Literal["slic", "fh"]


class LogUniform(GloconModel):
    low: float = Field(gt=0)
    high: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> "LogUniform":
        if not self.low < self.high:
            raise ValueError(f"loguniform needs low < high, got low={self.low} high={self.high}")
        return self


class TauSpace(GloconModel):
    """Exactly one of ``grid`` (a list of values) or ``loguniform`` ({low, high})."""

    grid: list[float] | None = None
    loguniform: LogUniform | None = None

    @model_validator(mode="after")
    def _one_of(self) -> "TauSpace":
        if (self.grid is None) == (self.loguniform is None):
            raise ValueError("space.tau: give exactly one of 'grid: [..]' or 'loguniform: {low, high}'")
        if self.grid is not None and (not self.grid or any(t <= 0 for t in self.grid)):
            raise ValueError(f"space.tau.grid: expected a non-empty list of positive temperatures, got {self.grid}")
        return self


class LossWeights(GloconModel):
    """Eq. (7) with weights: L = w_global * L_global + w_local * L_local. Table VI is (1,0), (0,1), (1,1)."""

    model_config = GloconModel.model_config | {"populate_by_name": True}

    global_: float = Field(1.0, alias="global", ge=0)
    local: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _not_both_zero(self) -> "LossWeights":
        if self.global_ == 0 and self.local == 0:
            raise ValueError("loss weights global=0 and local=0 leave nothing to train")
        return self

    @property
    def label(self) -> str:
        if self.local == 0:
            return "global"
        if self.global_ == 0:
            return "local"
        return "both" if self.global_ == self.local else f"g{self.global_:g}/l{self.local:g}"


class SearchSpace(GloconModel):
    """What varies. A dimension left out keeps the base pretraining config's value."""

    tau: TauSpace | None = None
    patch_method: list[PatchMethod] | None = None
    epochs: list[int] | None = None
    loss_weights: list[LossWeights] | None = None

    @field_validator("tau", mode="before")
    @classmethod
    def _tau_list(cls, v: object) -> object:
        # ``tau: [0.07, 0.2]`` is shorthand for ``tau: {grid: [0.07, 0.2]}``
        return {"grid": v} if isinstance(v, list) else v

    @field_validator("patch_method", "epochs", "loss_weights")
    @classmethod
    def _non_empty(cls, v: list | None) -> list | None:
        if v is not None and not v:
            raise ValueError("expected a non-empty list (leave the key out to keep the base value)")
        return v

    @field_validator("epochs")
    @classmethod
    def _positive_epochs(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(e < 1 for e in v):
            raise ValueError(f"epochs must be >= 1, got {v}")
        return v

    def dimensions(self) -> list[str]:
        return [k for k in type(self).model_fields if getattr(self, k) is not None]


class Targets(GloconModel):
    """Where each dimension goes in the pretraining config (dotted keys of ``PretrainConfig``)."""

    tau: str = "loss.tau"
    patch_method: str = "data.patch_method"
    epochs: str = "epochs"
    loss_weight_global: str = "loss.w_global"
    loss_weight_local: str = "loss.w_local"
    # set by the sweep itself for every trial: its Train run lives inside the sweep folder
    storage_path: str = "storage_path"
    name: str = "name"
    num_workers: str = "num_workers"
    use_gpu: str | None = "use_gpu"
    cpus_per_worker: str | None = "cpus_per_worker"


class AshaConfig(GloconModel):
    """ASHA (Li et al. 2018) as Ray Tune implements it; time is counted in pretraining epochs."""

    enabled: bool = True
    grace_period: int = Field(1, ge=1)  # epochs before a trial can be stopped
    reduction_factor: float = Field(2.0, gt=1)
    max_t: int | None = None  # None: the largest epoch count in the space (or the base config)


class ResourcesConfig(GloconModel):
    """Per-trial resources. Each trial is one driver (Tune function) plus ``workers_per_trial``
    Ray Train workers; the driver's CPU also pays for the objective, which Ray Train runs in
    its controller on the driver's node."""

    workers_per_trial: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    use_gpu: bool | None = None  # None: use a GPU per worker iff the cluster has GPUs
    driver_cpus: float = Field(1.0, ge=0)
    max_concurrent_trials: int | None = Field(None, ge=1)  # None: what the cluster can hold at once


class ProbeObjective(GloconModel):
    """``kind: probe``: dense retrieval mIoU (%) of each epoch's export (``glocon.probe``).

    With ``val_shards`` empty the scored images are a held-out share (by key hash) of
    ``train_shards``: the sweep then never looks at the split the final evaluation uses."""

    train_shards: str = ""  # labelled shards; empty: the base pretraining config's data.shards
    val_shards: str = ""
    limit: int | None = 200
    input_size: int = Field(160, gt=0)
    map: DenseMapName = "prior"


class ObjectiveConfig(GloconModel):
    """The downstream score at every epoch: ``kind: fewshot`` runs ``plugin.objective(prior_path,
    fewshot_cfg)``, ``kind: probe`` the dense probe's retrieval mIoU (``ProbeObjective``).

    ``config`` is a few-shot config (``glocon.fewshot.runner.FewShotConfig``: data, fold,
    image_size, ``objective.episodes``, the plugin's ``model`` section), as a YAML path or inline;
    ``overrides`` are dotted key=value on top. The runner scores seeded *validation* episodes of
    the fold's BASE classes, drawn from images that hold no novel class of that fold.
    """

    kind: Literal["fewshot", "probe"] = "fewshot"
    probe: ProbeObjective = Field(default_factory=ProbeObjective)
    plugin: str = "proto"
    config: str | dict[str, Any] = Field(default_factory=dict)
    overrides: list[str] = Field(default_factory=list)
    metric: str = "objective"


class SweepConfig(GloconModel):
    name: str = "sweep"
    storage_path: str = "runs/sweeps"
    # Base pretraining config: a YAML path (relative paths: to the working directory) and/or
    # dotted overrides applied on top of it before the search space.
    pretrain: str | None = None
    pretrain_overrides: list[str] = Field(default_factory=list)
    space: SearchSpace = Field(default_factory=SearchSpace)
    targets: Targets = Field(default_factory=Targets)
    num_samples: int = Field(1, ge=1)  # draws per grid point (matters for loguniform tau)
    seed: int = 0
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    loss_metric: str = "loss_mean"  # the pretraining report's contrastive loss (mean over the epoch), in the table
    max_failures: int = Field(0, ge=0)  # Tune-level retries of a crashed trial driver
    asha: AshaConfig = Field(default_factory=AshaConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    restore: bool = True  # rerun with the same name resumes the interrupted sweep
    dashboard: bool = True

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or "/" in v or v.startswith("."):
            raise ValueError(f"name {v!r}: expected a plain folder name (no '/', not starting with '.')")
        return v

    @property
    def experiment_dir(self) -> Path:
        return Path(self.storage_path).expanduser().resolve() / self.name


def load_sweep_config(path: str | os.PathLike | None, overrides: list[str] | tuple[str, ...] = ()) -> SweepConfig:
    return load_config(SweepConfig, path, overrides)


# -- the pretraining side -----------------------------------------------------------------------


def pretrain_model() -> type[PretrainConfig]:
    """The pretraining job's config model (imported late: the sweep module loads without it)."""
    from glocon.train.config import PretrainConfig

    return PretrainConfig


def check_targets(cfg: SweepConfig, model: type[GloconModel] | None = None) -> None:
    """Every path a dimension writes to must be a key of the pretraining config."""
    model = model or pretrain_model()
    valid = set(all_keys(model))
    used = {"tau": cfg.space.tau, "patch_method": cfg.space.patch_method, "epochs": cfg.space.epochs}
    wanted = [(f"targets.{k}", getattr(cfg.targets, k)) for k, v in used.items() if v is not None]
    if cfg.space.loss_weights is not None:
        wanted += [("targets.loss_weight_global", cfg.targets.loss_weight_global),
                   ("targets.loss_weight_local", cfg.targets.loss_weight_local)]
    wanted += [(f"targets.{k}", getattr(cfg.targets, k)) for k in ("storage_path", "name", "num_workers", "use_gpu", "cpus_per_worker")
               if getattr(cfg.targets, k) is not None]
    for field, path in wanted:
        if path not in valid:
            import difflib

            near = difflib.get_close_matches(path, sorted(valid), n=3, cutoff=0.4)
            raise ConfigError(
                f"sweep config: {field}={path!r} is not a key of {model.__name__}"
                + (f"; did you mean {', '.join(map(repr, near))}?" if near else "")
            )


def base_pretrain_dict(cfg: SweepConfig) -> dict[str, Any]:
    """The base pretraining config as a plain dict (file + overrides, validated once)."""
    model = pretrain_model()
    base = load_config(model, cfg.pretrain, cfg.pretrain_overrides)
    return base.model_dump(mode="json")


def set_dotted(data: dict[str, Any], dotted: str, value: object) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def get_dotted(data: dict[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def trial_pretrain_dict(base: dict[str, Any], params: dict[str, Any], targets: Targets) -> dict[str, Any]:
    """Base pretraining dict + one trial's sampled params (flat: tau, patch_method, epochs,
    w_global, w_local) written at their target paths."""
    import copy

    out = copy.deepcopy(base)
    for key, value in params.items():
        if value is None:
            continue
        path = {
            "tau": targets.tau,
            "patch_method": targets.patch_method,
            "epochs": targets.epochs,
            "w_global": targets.loss_weight_global,
            "w_local": targets.loss_weight_local,
        }.get(key)
        if path is None:
            raise ConfigError(f"trial param {key!r} has no target in the pretraining config")
        set_dotted(out, path, value)
    return out


def validate_pretrain(data: dict[str, Any], source: str) -> PretrainConfig:
    return validate_config(pretrain_model(), data, source)


# -- the Tune side ------------------------------------------------------------------------------


def param_space(space: SearchSpace) -> dict[str, Any]:
    """Flat Tune param space: grids become ``grid_search``, tau loguniform a ``tune.loguniform``."""
    from ray import tune

    out: dict[str, Any] = {}
    if space.tau is not None:
        if space.tau.grid is not None:
            out["tau"] = tune.grid_search(list(space.tau.grid))
        else:
            assert space.tau.loguniform is not None
            out["tau"] = tune.loguniform(space.tau.loguniform.low, space.tau.loguniform.high)
    if space.patch_method is not None:
        out["patch_method"] = tune.grid_search(list(space.patch_method))
    if space.epochs is not None:
        out["epochs"] = tune.grid_search(list(space.epochs))
    if space.loss_weights is not None:
        # One grid dimension over (global, local) pairs, so the weights vary together.
        out["weights"] = tune.grid_search([w.label for w in space.loss_weights])
    return out


def loss_weights_by_label(space: SearchSpace) -> dict[str, LossWeights]:
    return {w.label: w for w in space.loss_weights or []}


def flat_params(tune_config: dict[str, Any], space: SearchSpace) -> dict[str, Any]:
    """A trial's Tune config -> the flat params ``trial_pretrain_dict`` understands."""
    params = {k: tune_config[k] for k in ("tau", "patch_method", "epochs") if k in tune_config}
    if "weights" in tune_config:
        w = loss_weights_by_label(space)[tune_config["weights"]]
        params["w_global"], params["w_local"] = w.global_, w.local
    return params


def grid_size(space: SearchSpace) -> int:
    n = 1
    for dim in (space.tau.grid if space.tau else None, space.patch_method, space.epochs, space.loss_weights):
        if dim:
            n *= len(dim)
    return n


def max_epochs(cfg: SweepConfig, base: dict[str, Any]) -> int:
    if cfg.asha.max_t is not None:
        return cfg.asha.max_t
    if cfg.space.epochs:
        return max(cfg.space.epochs)
    value = get_dotted(base, cfg.targets.epochs)
    if not isinstance(value, int):
        raise ConfigError(f"asha.max_t: cannot infer it, {cfg.targets.epochs!r} of the base pretraining config is {value!r}")
    return value


def n_trials(cfg: SweepConfig) -> int:
    return grid_size(cfg.space) * cfg.num_samples


__all__ = [
    "AshaConfig",
    "LogUniform",
    "LossWeights",
    "ObjectiveConfig",
    "ResourcesConfig",
    "SearchSpace",
    "SweepConfig",
    "TauSpace",
    "Targets",
    "base_pretrain_dict",
    "check_targets",
    "flat_params",
    "load_sweep_config",
    "n_trials",
    "param_space",
    "parse_override",
    "trial_pretrain_dict",
]
