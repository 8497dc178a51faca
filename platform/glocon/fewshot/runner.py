"""The shared few-shot runner behind every plugin's ``fit``, ``evaluate`` and ``objective``.

- ``fit``: trains a plugin's model on base-class episodes under Ray Train (one run per fold),
  SGD with lr 0.0025, momentum 0.9, weight decay 1e-4 and poly(0.9) decay, as PFENet and the
  paper; checkpoints hold the trainable state, optimizer, scheduler, step and RNG, and rerunning
  with the same name resumes from ``ray.train.get_checkpoint()`` (Ray Train V2 restores a run
  from (storage_path, name); ``resume_from_checkpoint`` is gone).
- ``evaluate``: 1-shot and 5-shot episodes on novel classes, from episode files written once and
  reused, so every model is scored on the same episodes; writes results as JSON + markdown and
  a Fig. 5-style PNG grid.
- ``objective``: mIoU (%) on seeded *validation* episodes of base classes, never touching an
  image with a novel class of the fold; the cheap score a sweep maximises.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import torch
from pydantic import Field, model_validator

from glocon import tblog
from glocon.config import GloconModel, save_resolved
from glocon.dashboard import Dashboard
from glocon.errors import CheckpointError, ConfigError
from glocon.fewshot.batches import CachedSource, TrainEpisodes, load_eval_episode, stack_eval
from glocon.fewshot.episodes import DEFAULT_EPISODES, DEFAULT_SEED, EpisodeSet, TrainEpisodeSampler, episodes_for, source_image_classes
from glocon.fewshot.metrics import ClassIoUAccumulator, RegionMapAccumulator
from glocon.fewshot.report import figure_png, results_markdown
from glocon.fewshot.transforms import to_original
from glocon.io import atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_file
from glocon.raycluster import RayConfig, train_logging
from glocon.train.faults import FaultSection, maybe_die

MODEL_FORMAT = "glocon.fewshot_model/v1"
STATE_FORMAT = "glocon.fewshot_state/v1"
REGION_MAPS = ("prior_region_map", "guided_region_map")


# -- config ------------------------------------------------------------------------------------
class FewShotData(GloconModel):
    shards: str | list[str] | None = None  # shard folder(s) or manifest.json(s) (make_shards output), merged
    benchmark: Literal["pascal", "coco", "fss", "embedded"] = "embedded"
    folds: list[int] = [0, 1, 2, 3]  # fss: ignored (the test split is the one "fold", 0)
    coco_split: Literal["interleaved", "contiguous"] = "interleaved"
    fss_split_dir: str | None = None  # HSNet's data/splits/fss (trn/val/test.txt)
    # Explicit class lists override the benchmark's fold split (custom data); base defaults to "all others".
    novel_classes: list[int] | None = None
    base_classes: list[int] | None = None


class FitConfig(GloconModel):
    steps: int | None = None  # total optimiser steps; or give epochs
    epochs: float | None = None  # passes over the base-class query images (PFENet: 200 on PASCAL)
    batch_size: int = Field(4, gt=0)  # global, split over workers (PFENet / paper: 4)
    shots: int = 1  # training episodes' K (HSNet trains 1-shot and tests 1- and 5-shot)
    lr: float = 0.0025
    momentum: float = 0.9
    weight_decay: float = 1e-4
    power: float = 0.9  # poly decay: lr * (1 - step / steps) ** power
    scale: tuple[float, float] = (0.9, 1.1)  # PFENet's RandScale
    num_workers: int = Field(1, gt=0)  # Ray Train workers (DDP when > 1)
    cpus_per_worker: int = 1
    loader_workers: int = 0  # torch DataLoader processes per Ray worker
    storage_path: str = "runs/fewshot"
    name: str = "fit"  # run name; fold f trains as "<name>-fold<f>"; rerun the same name to resume
    max_failures: int = 0
    checkpoint_every: int = 100  # steps
    stop_at_step: int | None = None  # end this run early after a checkpoint (tests; rerun the same name to resume)
    fault: FaultSection = FaultSection()  # drills: SIGKILL a worker once at a step (glocon.train.faults)

    @model_validator(mode="after")
    def _check(self) -> "FitConfig":
        if self.batch_size % self.num_workers:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of num_workers {self.num_workers}")
        return self


class EvalConfig(GloconModel):
    episodes: int = DEFAULT_EPISODES  # per fold and shot (HSNet: 1000; PFENet: 5000 PASCAL, 20000 COCO)
    shots: list[int] = [1, 5]
    batch_size: int = Field(1, gt=0)
    n_figure_episodes: int = 4
    out_dir: str = "runs/fewshot/eval"
    weights: str | None = None  # a fit's model.pt (one fold) or a folder with fold<f>/model.pt; default: fit's output
    allow_untrained: bool = False  # score a trainable plugin with no trained weights (benches, smoke tests)


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
    image_size: int = 473  # PFENet / paper; the CPU demo uses less
    seed: int = DEFAULT_SEED
    episodes_dir: str = "runs/fewshot/episodes"  # shared by every model, so all compare on the same episodes
    device: Literal["auto", "cpu", "cuda"] = "auto"
    fit: FitConfig = FitConfig()
    eval: EvalConfig = EvalConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    ray: RayConfig = RayConfig()


# -- plumbing ----------------------------------------------------------------------------------
def open_source(cfg: FewShotConfig, source: Any = None) -> Any:
    """The episode source: ``source`` if given (tests, custom readers), else the shard index."""
    if source is not None:
        return source
    if not cfg.data.shards:
        raise ConfigError("data.shards: a shard folder or manifest.json is needed (make it with `glocon shards`)")
    try:
        from glocon.data.readers import ShardIndex
    except ImportError as exc:  # pragma: no cover - the reader ships with glocon
        raise ConfigError(f"data.shards: glocon.data.readers is unavailable ({exc})") from None
    from glocon.fewshot.batches import ShardEpisodeSource

    paths = [cfg.data.shards] if isinstance(cfg.data.shards, str) else list(cfg.data.shards)
    return ShardEpisodeSource(*(ShardIndex(p) for p in paths))


def _abs(path: str | None) -> str | None:
    return None if path is None or "://" in path else str(Path(path).resolve())


def resolve_paths(cfg: FewShotConfig) -> FewShotConfig:
    """A copy with absolute paths: Ray workers run in another working directory."""
    data = cfg.model_dump(mode="json")
    shards = data["data"]["shards"]
    if shards is not None:
        data["data"]["shards"] = _abs(shards) if isinstance(shards, str) else [_abs(p) for p in shards]
    data["data"]["fss_split_dir"] = _abs(data["data"]["fss_split_dir"])
    data["prior"] = _abs(data["prior"])
    data["episodes_dir"] = _abs(data["episodes_dir"])
    data["fit"]["storage_path"] = _abs(data["fit"]["storage_path"])
    return FewShotConfig.model_validate(data)


def fold_split(cfg: FewShotConfig, fold: int, class_index: Mapping[Any, Any]) -> tuple[list[int], list[int]]:
    """(base, novel) class ids of a fold, from the platform's split (``glocon.data.folds``)."""
    d = cfg.data
    present = sorted(int(c) for c in class_index)
    if d.novel_classes is not None:
        novel = sorted(d.novel_classes)
        base = sorted(d.base_classes) if d.base_classes is not None else [c for c in present if c not in set(novel)]
        return base, novel
    from glocon.data import folds

    if d.benchmark == "fss":
        if not d.fss_split_dir:
            raise ConfigError("data.fss_split_dir: FSS-1000 needs HSNet's split folder (trn/val/test.txt)")
        return folds.base_classes("fss", "trn", split_dir=d.fss_split_dir), folds.novel_classes("fss", "test", split_dir=d.fss_split_dir)
    novel = folds.novel_classes(d.benchmark, fold, coco_mode=d.coco_split)
    base = folds.base_classes(d.benchmark, fold, coco_mode=d.coco_split)
    return base, novel


def folds_of(cfg: FewShotConfig) -> list[int]:
    return [0] if cfg.data.benchmark == "fss" else list(cfg.data.folds)


def resolve_device(cfg: FewShotConfig) -> torch.device:
    from glocon.device import pick_device

    return pick_device(cfg.device)


def load_prior(path: str | None) -> Any:
    if not path:
        return None
    from glocon.models.prior import load_prior_extractor

    return load_prior_extractor(path)


def build(plugin: Any, cfg: FewShotConfig, prior_path: str | None = None) -> torch.nn.Module:
    """plugin.build_model(validated model config, loaded prior or None)."""
    model_cfg = plugin.make_config(cfg.model, f"model ({plugin.name})") if hasattr(plugin, "make_config") else plugin.config_model.model_validate(cfg.model)
    return plugin.build_model(model_cfg, load_prior(prior_path if prior_path is not None else cfg.prior))


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The part of the state a fit changes: every trainable parameter, plus the buffers (BatchNorm
    statistics) of the modules that own one. Frozen backbones and the prior stay out."""
    model = _unwrap(model)
    ids = {id(p) for p in model.trainable_parameters()}
    owners: set[str] = set()
    keep: set[str] = set()
    for name, p in model.named_parameters():
        if id(p) in ids:
            keep.add(name)
            owners.add(name.rsplit(".", 1)[0] if "." in name else "")
    for name, _ in model.named_buffers():
        if (name.rsplit(".", 1)[0] if "." in name else "") in owners:
            keep.add(name)
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k in keep}


def load_trainable_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    own = _unwrap(model).state_dict()
    unknown = [k for k in state if k not in own]
    if unknown:
        raise CheckpointError(f"{where}: {len(unknown)} tensors do not belong to this model, e.g. {unknown[:3]} (another plugin or model config?)")
    bad = [k for k, v in state.items() if tuple(own[k].shape) != tuple(v.shape)]
    if bad:
        raise CheckpointError(f"{where}: shape mismatch for {bad[:3]} (model config differs from the one trained)")
    _unwrap(model).load_state_dict(dict(state), strict=False)


def run_dir(cfg: FewShotConfig, fold: int) -> Path:
    return Path(cfg.fit.storage_path) / f"{cfg.fit.name}-fold{fold}"


def model_path(cfg: FewShotConfig, fold: int) -> Path:
    return run_dir(cfg, fold) / "model.pt"


def save_model_file(path: Path, plugin: Any, cfg: FewShotConfig, fold: int, state: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> Path:
    from glocon.train.checkpoint import save_tensors

    return save_tensors(path, {"format": MODEL_FORMAT, "plugin": plugin.name, "model": json.dumps(cfg.model, sort_keys=True), "fold": fold, "state": dict(state), "info": json.dumps(dict(info), default=str)})


def load_model_file(path: Path, plugin: Any, fold: int) -> dict[str, Any]:
    from glocon.train.checkpoint import load_tensors

    payload = load_tensors(path)
    if payload.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{path}: expected format {MODEL_FORMAT!r}, got {payload.get('format')!r}")
    if payload.get("plugin") != plugin.name:
        raise CheckpointError(f"{path}: trained by plugin {payload.get('plugin')!r}, not {plugin.name!r}")
    if int(payload.get("fold", -1)) != fold:
        raise CheckpointError(f"{path}: trained for fold {payload.get('fold')}, evaluated on fold {fold}; novel classes would leak")
    return payload


def weights_for(cfg: FewShotConfig, fold: int) -> Path:
    if cfg.eval.weights:
        p = Path(cfg.eval.weights)
        return p / f"fold{fold}" / "model.pt" if p.is_dir() else p
    return model_path(cfg, fold)


# -- training ----------------------------------------------------------------------------------
def total_steps(cfg: FewShotConfig, sampler: TrainEpisodeSampler) -> int:
    if cfg.fit.steps is not None:
        return int(cfg.fit.steps)
    if cfg.fit.epochs is not None:
        n_queries = sum(len(v) for v in sampler.pool.values())
        return max(1, math.ceil(cfg.fit.epochs * n_queries / cfg.fit.batch_size))
    raise ConfigError("fit: set fit.steps or fit.epochs")


def make_optimizer(model: torch.nn.Module, cfg: FewShotConfig, steps: int) -> tuple[torch.optim.Optimizer, Any]:
    params = list(_unwrap(model).trainable_parameters())
    if not params:
        raise ConfigError("fit: the model has no trainable parameters (a training-free plugin needs no fit)")
    opt = torch.optim.SGD(params, lr=cfg.fit.lr, momentum=cfg.fit.momentum, weight_decay=cfg.fit.weight_decay)
    # PFENet's poly_learning_rate: base_lr * (1 - iter / max_iter) ** power
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=steps, power=cfg.fit.power)
    return opt, sched


def train_steps(
    model: torch.nn.Module,
    loss_fn: Callable[[dict[str, Any], torch.Tensor], tuple[torch.Tensor, dict[str, float]]],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    dataset: TrainEpisodes,
    *,
    batch_size: int,
    start_step: int,
    device: torch.device,
    loader_workers: int = 0,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> int:
    """Run the optimiser over ``dataset`` (already cut to this worker's episodes from ``start_step``).
    Returns the step after the last one."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=loader_workers, drop_last=True)
    step = start_step
    model.train()
    for batch in loader:
        t0 = time.perf_counter()
        out = model(batch["query"].to(device), batch["support_images"].to(device), batch["support_masks"].to(device))
        loss, parts = loss_fn(out, batch["target"].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        step += 1
        if on_step is not None:
            on_step(step, {"loss": float(loss.detach()), **{k: float(v) for k, v in parts.items() if k != "loss"}, "lr": lr, "s_per_step": time.perf_counter() - t0})
    return step


def _worker_indices(start: int, steps: int, global_batch: int, rank: int, per_worker: int) -> list[int]:
    """Episode indices this worker trains on from ``start``: step s, worker r, slot j -> s*G + r*b + j."""
    return [s * global_batch + rank * per_worker + j for s in range(start, steps) for j in range(per_worker)]


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: everything comes from ``config``; state from ``ray.train.get_checkpoint()``."""
    import ray.train
    import ray.train.torch

    from glocon.raycluster import quiet_train_reports

    quiet_train_reports()

    from glocon.train.checkpoint import load_resumable, load_tensors, rng_state, save_tensors, set_rng_state

    cfg = FewShotConfig.model_validate(config["cfg"])
    plugin, fold, actor = config["plugin"], int(config["fold"]), config.get("metrics_actor")
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, cfg.fit.cpus_per_worker))
    device = ray.train.torch.get_device()

    source = CachedSource(open_source(cfg, config.get("source")))
    base, novel = fold_split(cfg, fold, source.class_index)
    sampler = TrainEpisodeSampler(
        source.class_index, benchmark=cfg.data.benchmark, fold=fold, shots=cfg.fit.shots, seed=cfg.seed,
        base=base, novel=novel, image_classes=source_image_classes(source),
    )  # fmt: skip
    steps = total_steps(cfg, sampler)

    torch.manual_seed(cfg.seed)  # same initial weights on every worker
    model = build(plugin, cfg).to(device)
    optimizer, scheduler = make_optimizer(model, cfg, steps)
    step = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as latest:
            # A truncated latest checkpoint (killed mid-write, full disk) falls back to the newest good one.
            state, folder = load_resumable(latest, run_dir(cfg, fold), loader=load_fit_state)
            load_trainable_state(model, state["model"], f"{folder}/state.pt")
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            step = int(state["step"])
            rng = Path(folder) / f"rng-rank{rank}.pt"
            if rng.is_file():
                set_rng_state(load_tensors(rng))
    else:
        torch.manual_seed(cfg.seed * 1000 + rank + 1)  # per-worker randomness (dropout)
    resumed_from = step

    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, find_unused_parameters=True)
    per_worker = cfg.fit.batch_size // world
    end = min(steps, cfg.fit.stop_at_step) if cfg.fit.stop_at_step is not None else steps
    dataset = TrainEpisodes(source, sampler, cfg.image_size, cfg.seed, _worker_indices(step, end, cfg.fit.batch_size, rank, per_worker), cfg.fit.scale)
    if actor is not None and rank == 0:
        actor.push.remote({"event": "start", "step": step, "total_steps": steps, "resumed_from_step": resumed_from})
    losses: list[float] = []

    def on_step(s: int, metrics: dict[str, float]) -> None:
        losses.append(metrics["loss"])
        m = {"step": s, "total_steps": steps, "fold": fold, "resumed_from_step": resumed_from, **metrics}
        if actor is not None and rank == 0:
            actor.push.remote(m)
        if s % cfg.fit.checkpoint_every == 0 or s == end:
            with tempfile.TemporaryDirectory(prefix="glocon-fewshot-ckpt-") as tmp:
                if rank == 0:
                    save_tensors(
                        Path(tmp) / "state.pt",
                        {"format": STATE_FORMAT, "model": trainable_state(model), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": s, "fold": fold},
                    )
                    atomic_write_json(Path(tmp) / "metrics.json", dict(m, loss_mean=sum(losses) / len(losses)))
                save_tensors(Path(tmp) / f"rng-rank{rank}.pt", rng_state())
                ray.train.report(dict(m, loss_mean=sum(losses) / len(losses)), checkpoint=ray.train.Checkpoint.from_directory(tmp), checkpoint_dir_name=f"checkpoint-step{s:08d}")
            losses.clear()
            maybe_die(cfg.fit.fault, s, rank)

    train_steps(net, _unwrap(net).loss, optimizer, scheduler, dataset, batch_size=per_worker, start_step=step, device=device, loader_workers=cfg.fit.loader_workers, on_step=on_step)
    if actor is not None and rank == 0:
        actor.push.remote({"event": "done", "step": steps})


def fit(plugin: Any, cfg: FewShotConfig, source: Any = None) -> dict[str, Any]:
    """Train ``plugin``'s model on base-class episodes of every fold under Ray Train.

    Writes ``<storage_path>/<name>-fold<f>/model.pt`` (the trainable state) per fold, plus the
    resolved config. Rerunning with the same ``fit.name`` resumes each fold from its last
    checkpoint (a finished fold is not retrained).
    """
    if isinstance(cfg, Mapping):
        cfg = FewShotConfig.model_validate(cfg)
    if not getattr(plugin, "trainable", False):
        return {"plugin": plugin.name, "trained": False, "reason": "training-free plugin: nothing to fit"}
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from glocon.raycluster import init_ray
    from glocon.train.metrics_actor import MetricsActor, MetricsPoller

    init_ray(cfg.ray)
    storage = str(Path(cfg.fit.storage_path).resolve()) if "://" not in cfg.fit.storage_path else cfg.fit.storage_path
    summary: dict[str, Any] = {"plugin": plugin.name, "trained": True, "folds": {}}
    for fold in folds_of(cfg):
        out = model_path(cfg, fold)
        save_resolved(cfg, run_dir(cfg, fold))
        actor = MetricsActor.remote()
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"cfg": resolve_paths(cfg).model_dump(mode="json"), "plugin": plugin, "fold": fold, "source": source, "metrics_actor": actor},
            scaling_config=ScalingConfig(
                num_workers=cfg.fit.num_workers, use_gpu=torch.cuda.is_available(), resources_per_worker={"CPU": cfg.fit.cpus_per_worker}
            ),
            run_config=RunConfig(
                name=f"{cfg.fit.name}-fold{fold}",
                storage_path=storage,
                failure_config=FailureConfig(max_failures=cfg.fit.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=2),
                logging_config=train_logging(),
            ),
        )
        history: list[dict[str, Any]] = []
        tb = tblog.run_log(run_dir(cfg, fold), "fit")  # <run>/tb/ for TensorBoard (optional)
        with Dashboard(f"fewshot fit {plugin.name} fold {fold}", unit="steps") as dash:

            def on_metrics(m: dict[str, Any]) -> None:
                history.append(m)
                tb.log(m)
                if m.get("event") == "start":
                    dash.update(completed=m["step"], total=m["total_steps"])
                    if m.get("resumed_from_step"):
                        dash.log(f"resumed from step {m['resumed_from_step']}")
                elif "loss" in m:
                    dash.update(completed=m["step"], total=m["total_steps"], loss=m["loss"], lr=m["lr"])

            with MetricsPoller(actor, on_metrics):
                result = trainer.fit()
        tb.close()
        ray.kill(actor)
        if getattr(result, "error", None) is not None:
            raise result.error
        from glocon.train.checkpoint import load_resumable

        # The newest checkpoint that loads; a finished run whose last checkpoint was damaged after
        # the fact is then reported incomplete (rerun to finish it), never read as valid.
        state, folder = load_resumable(_checkpoint_folder(result, run_dir(cfg, fold)), run_dir(cfg, fold), loader=load_fit_state)
        metrics = json.loads((folder / "metrics.json").read_text())
        step, steps = int(state["step"]), int(metrics["total_steps"])
        losses = [m["loss"] for m in history if "loss" in m]
        atomic_write_json(run_dir(cfg, fold) / "history.json", history)
        done = step >= steps
        if done:
            save_model_file(out, plugin, cfg, fold, state["model"], {"step": step, "metrics": metrics})
        summary["folds"][fold] = {
            "model": str(out) if done else None,
            "step": step,
            "total_steps": steps,
            "complete": done,
            "checkpoint": str(folder),
            "resumed_from_step": next((m.get("resumed_from_step") for m in history if m.get("event") == "start"), None),
            # every (re)start of the worker group in this call: [0, 4] = a fresh run whose workers restarted at step 4
            "starts": [m.get("resumed_from_step") for m in history if m.get("event") == "start"],
            "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "metrics": metrics,
        }
    return summary


FIT_STATE_KEYS = ("model", "optimizer", "scheduler", "step", "fold")


def load_fit_state(folder: Path) -> dict[str, Any]:
    """One fit checkpoint's ``state.pt``, checked: its format and keys, or a ``CheckpointError``
    naming the file (``load_resumable`` then tries the next older checkpoint)."""
    from glocon.train.checkpoint import load_tensors

    path = Path(folder) / "state.pt"
    state = load_tensors(path)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"checkpoint {path}: expected format {STATE_FORMAT!r}, got {got!r}")
    missing = [k for k in FIT_STATE_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path}: missing {missing}")
    if not (Path(folder) / "metrics.json").is_file():
        raise CheckpointError(f"checkpoint {Path(folder) / 'metrics.json'}: missing")
    return state


def _checkpoint_folder(result: Any, folder: Path) -> Path:
    """The run's latest checkpoint: Ray's result, else the newest checkpoint-step* folder (a
    rerun of a finished run trains nothing and reports nothing new)."""
    ckpt = getattr(result, "checkpoint", None)
    if ckpt is not None:
        return Path(ckpt.path) if os.path.isdir(ckpt.path) else Path(ckpt.to_directory())
    found = sorted(folder.glob("checkpoint-step*"))
    if not found:
        raise CheckpointError(f"fit: no checkpoint under {folder} (the run reported none)")
    return found[-1]


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


# -- evaluation --------------------------------------------------------------------------------
def _class_names(source: Any) -> dict[str, str]:
    names = getattr(source, "class_names", None)
    if callable(names):
        names = names()
    return {str(k): str(v) for k, v in (names or {}).items()}


@torch.inference_mode()
def evaluate_episodes(
    model: torch.nn.Module,
    source: Any,
    es: EpisodeSet,
    *,
    image_size: int,
    batch_size: int,
    device: torch.device,
    n_figure: int = 0,
    dash: Dashboard | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score ``model`` on every episode of ``es``; returns (results, Fig. 5 rows)."""
    model.eval()
    acc = ClassIoUAccumulator(es.classes)
    regions: dict[str, RegionMapAccumulator] = {}
    per_episode: list[float] = []
    figure: list[dict[str, Any]] = []
    # Digests of every logit and prediction: two runs are equal bit for bit iff these match.
    logits_sha, preds_sha = hashlib.sha256(), hashlib.sha256()
    for start in range(0, len(es.episodes), batch_size):
        batch = [load_eval_episode(source, e, image_size) for e in es.episodes[start : start + batch_size]]
        q, s, m = stack_eval(batch)
        out = model(q.to(device), s.to(device), m.to(device))
        logits = out["logits"].float().cpu().contiguous()
        logits_sha.update(logits.numpy().tobytes())
        for i, ep in enumerate(batch):
            pred = to_original(logits[i : i + 1], ep.info).argmax(dim=1)[0]
            preds_sha.update(pred.to(torch.uint8).numpy().tobytes())
            per_episode.append(acc.update(ep.episode.cls, pred, ep.label))
            maps = {}
            for name in REGION_MAPS:
                if out.get(name) is not None:
                    rm = to_original(out[name][i : i + 1].float().cpu(), ep.info)
                    regions.setdefault(name, RegionMapAccumulator()).update(rm, ep.label)
                    maps[name] = rm[0, 0].numpy()
            if len(figure) < n_figure:
                figure.append(
                    {
                        "support_image": ep.support_images[0],
                        "support_label": ep.support_labels[0],
                        "query_image": ep.query_image,
                        "prior_map": maps.get("prior_region_map"),
                        "guided_map": maps.get("guided_region_map"),
                        "prediction": pred.numpy(),
                        "label": ep.label.numpy(),
                        "caption": f"class {ep.episode.cls}\nIoU {100 * per_episode[-1]:.1f}",
                    }
                )
        if dash is not None:
            dash.advance(len(batch), mIoU=100 * acc.miou(), FB_IoU=100 * acc.fb_iou())
    results = {
        "miou": acc.miou(),
        "fb_iou": acc.fb_iou(),
        "class_iou": {str(c): v for c, v in acc.class_iou().items()},
        "class_episodes": {str(c): n for c, n in acc.episodes.items()},
        "class_intersection": {str(c): v for c, v in acc.intersection.items()},
        "class_union": {str(c): v for c, v in acc.union.items()},
        "mean_episode_iou": sum(per_episode) / len(per_episode) if per_episode else 0.0,
        # Eq. 14 counts a class no episode drew as 0 (PFENet, HSNet); with few episodes, say so apart.
        "miou_visited": _mean([v for c, v in acc.class_iou().items() if acc.episodes[c] > 0]),
        "classes_visited": sum(1 for n in acc.episodes.values() if n > 0),
        "episodes": len(per_episode),
        "region_maps": {name.replace("_region_map", ""): r.summary() for name, r in regions.items()},
        "logits_sha256": logits_sha.hexdigest(),
        "predictions_sha256": preds_sha.hexdigest(),
    }
    return results, figure


def _prepare_model(plugin: Any, cfg: FewShotConfig, fold: int, device: torch.device, prior_path: str | None = None) -> tuple[torch.nn.Module, str]:
    torch.manual_seed(cfg.seed)
    model = build(plugin, cfg, prior_path)
    weights = "none (training-free)"
    if getattr(plugin, "trainable", False):
        path = weights_for(cfg, fold)
        if path.is_file():
            payload = load_model_file(path, plugin, fold)
            load_trainable_state(model, payload["state"], str(path))
            weights = str(path)
        elif cfg.eval.allow_untrained:
            weights = "untrained (eval.allow_untrained=true)"
        else:
            raise ConfigError(
                f"eval: no trained weights for plugin {plugin.name!r} fold {fold} at {path}; "
                f"run `glocon fewshot fit --plugin {plugin.name} ...` first, set eval.weights, or eval.allow_untrained=true"
            )
    return model.to(device), weights


def evaluate(plugin: Any, cfg: FewShotConfig, source: Any = None) -> dict[str, Any]:
    """1-shot and 5-shot episodes on the novel classes of every fold; writes results.{json,md} and
    fig5-fold<f>-<k>shot.png to ``eval.out_dir``. Returns the results dict."""
    if isinstance(cfg, Mapping):
        cfg = FewShotConfig.model_validate(cfg)
    device = resolve_device(cfg)
    src = CachedSource(open_source(cfg, source))
    out_dir = Path(cfg.eval.out_dir)
    save_resolved(cfg, out_dir)
    folds = folds_of(cfg)
    results: dict[str, Any] = {
        "plugin": plugin.name,
        "model": cfg.model,
        "prior": cfg.prior,
        "benchmark": cfg.data.benchmark,
        "shots": list(cfg.eval.shots),
        "seed": cfg.seed,
        "image_size": cfg.image_size,
        "episodes_per_fold": cfg.eval.episodes,
        "class_names": _class_names(src),
        "folds": {},
        "episode_files": {},
        "weights": {},
    }
    plans: list[tuple[int, int, EpisodeSet, Path, bool]] = []
    for fold in folds:
        base, novel = fold_split(cfg, fold, src.class_index)
        for k in cfg.eval.shots:
            es, path, reused = episodes_for(
                src, cfg.episodes_dir, benchmark=cfg.data.benchmark, fold=fold, mode="test", shots=k,
                n_episodes=cfg.eval.episodes, seed=cfg.seed, base=base, novel=novel,
            )  # fmt: skip
            plans.append((fold, k, es, path, reused))
    total = sum(len(p[2].episodes) for p in plans)
    t0 = time.perf_counter()
    with Dashboard(f"fewshot eval {plugin.name}", total=total, unit="episodes") as dash:
        for fold in folds:
            model, weights = _prepare_model(plugin, cfg, fold, device)
            results["weights"][str(fold)] = weights
            results["folds"][str(fold)] = {}
            for f, k, es, path, reused in plans:
                if f != fold:
                    continue
                dash.log(f"fold {fold} {k}-shot: {len(es.episodes)} episodes over {len(es.classes)} classes ({'reused' if reused else 'drew'} {path})")
                torch.manual_seed(cfg.seed)
                r, fig_rows = evaluate_episodes(
                    model, src, es, image_size=cfg.image_size, batch_size=cfg.eval.batch_size, device=device,
                    n_figure=cfg.eval.n_figure_episodes, dash=dash,
                )  # fmt: skip
                r["skipped_classes"] = es.extra.get("skipped_classes", [])
                results["folds"][str(fold)][str(k)] = r
                results["episode_files"][f"fold{fold}-{k}shot"] = {"path": str(path), "sha256": sha256_file(path)}
                if fig_rows:
                    png = figure_png(fig_rows, f"{plugin.name} - {cfg.data.benchmark} fold {fold}, {k}-shot")
                    atomic_write_bytes(out_dir / f"fig5-fold{fold}-{k}shot.png", png)
                dash.log(f"fold {fold} {k}-shot: mIoU {100 * r['miou']:.2f}  FB-IoU {100 * r['fb_iou']:.2f}")
    elapsed = time.perf_counter() - t0
    results["mean"] = {
        str(k): {
            "miou": sum(results["folds"][str(f)][str(k)]["miou"] for f in folds) / len(folds),
            "fb_iou": sum(results["folds"][str(f)][str(k)]["fb_iou"] for f in folds) / len(folds),
        }
        for k in cfg.eval.shots
    }
    results["timing"] = {"seconds": elapsed, "episodes_per_s": total / elapsed if elapsed > 0 else None, "device": str(device)}
    atomic_write_json(out_dir / "results.json", results)
    atomic_write_text(out_dir / "results.md", results_markdown(results))
    return results


# -- objective ---------------------------------------------------------------------------------
def objective(plugin: Any, prior_path: str, cfg: FewShotConfig | Mapping[str, Any], source: Any = None) -> float:
    """mIoU (%) on seeded validation episodes of BASE classes with the prior at ``prior_path``.

    The episodes (``<episodes_dir>/<benchmark>-fold<f>-val-...json``) never hold an image with a
    novel class of the fold. A trainable plugin first trains ``objective.fit_steps`` steps on
    base-class training episodes, in this process (a Tune trial is already a Ray task).
    """
    if isinstance(cfg, Mapping):
        cfg = FewShotConfig.model_validate(cfg)
    device = resolve_device(cfg)
    src = CachedSource(open_source(cfg, source))
    fold = cfg.objective.fold if cfg.objective.fold is not None else folds_of(cfg)[0]
    base, novel = fold_split(cfg, fold, src.class_index)
    es, _, _ = episodes_for(
        src, cfg.episodes_dir, benchmark=cfg.data.benchmark, fold=fold, mode="val", shots=cfg.objective.shots,
        n_episodes=cfg.objective.episodes, seed=cfg.seed, base=base, novel=novel,
    )  # fmt: skip
    torch.manual_seed(cfg.seed)
    model = build(plugin, cfg, prior_path).to(device)
    if getattr(plugin, "trainable", False) and cfg.objective.fit_steps > 0:
        sampler = TrainEpisodeSampler(
            src.class_index, benchmark=cfg.data.benchmark, fold=fold, shots=cfg.fit.shots, seed=cfg.seed,
            base=base, novel=novel, image_classes=source_image_classes(src),
        )  # fmt: skip
        steps = cfg.objective.fit_steps
        optimizer, scheduler = make_optimizer(model, cfg, steps)
        dataset = TrainEpisodes(src, sampler, cfg.image_size, cfg.seed, _worker_indices(0, steps, cfg.fit.batch_size, 0, cfg.fit.batch_size), cfg.fit.scale)
        train_steps(model, model.loss, optimizer, scheduler, dataset, batch_size=cfg.fit.batch_size, start_step=0, device=device)
    torch.manual_seed(cfg.seed)
    r, _ = evaluate_episodes(model, src, es, image_size=cfg.image_size, batch_size=cfg.eval.batch_size, device=device)
    return 100.0 * r["miou"]
