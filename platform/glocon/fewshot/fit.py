"""``fit``: train a plugin's model on base-class episodes under Ray Train, one run per (fold, shots).

SGD with PFENet's schedule (``glocon.fewshot.config``: base lr 0.0025, every new layer at 10x,
momentum 0.9, weight decay 1e-4, poly 0.9). Checkpoints hold the trainable state, optimizer,
scheduler, step and RNG; rerunning with the same name resumes from ``ray.train.get_checkpoint()``
(Ray Train V2 restores a run from (storage_path, name)). When the model can split its frozen
encoders from its head (``glocon.fewshot.cache``), the driver first caches the frozen features of
a fixed set of augmented views, and the workers train the heads on them.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch

from glocon import tblog
from glocon import seeds
from glocon.config import save_resolved
from glocon.dashboard import Dashboard
from glocon.errors import ConfigError
from glocon.featstore import open_store
from glocon.fewshot import baseval
from glocon.fewshot import cache as fcache
from glocon.fewshot.batches import CachedSource, TrainEpisodes
from glocon.fewshot.config import FewShotConfig
from glocon.fewshot.episodes import TrainEpisodeSampler, source_image_classes
from glocon.fewshot.sources import build, fold_split, folds_of, open_source, resolve_paths
from glocon.fewshot.state import (
    STATE_FORMAT, as_segmenter, checkpoint_folder, load_fit_state, load_trainable_state, model_path, run_dir, run_name, save_model_file, trainable_state, unwrap,
)  # fmt: skip
from glocon.io import atomic_write_json, sha256_file
from glocon.train.checkpoint import load_resumable
from glocon.train.run import RunSpec, WorkerSession, build_trainer, fit_with_feed
from glocon.viz.curves import plot_fit_curves

if TYPE_CHECKING:  # annotations only
    from torch.optim.lr_scheduler import LRScheduler
    from torch.utils.data import Dataset

    from glocon.fewshot.episodefile import Episode
    from glocon.fewshot.episodes import EpisodeSource
    from glocon.fewshot.plugin_protocol import FewShotPlugin


def total_steps(cfg: FewShotConfig, sampler: TrainEpisodeSampler) -> int:
    if cfg.fit.steps is not None:
        return int(cfg.fit.steps)
    if cfg.fit.epochs is not None:
        n_queries = sum(len(v) for v in sampler.pool.values())
        return max(1, math.ceil(cfg.fit.epochs * n_queries / cfg.fit.batch_size))
    raise ConfigError("fit: set fit.steps or fit.epochs")


def make_optimizer(model: torch.nn.Module, cfg: FewShotConfig, steps: int) -> tuple[torch.optim.Optimizer, LRScheduler]:
    """SGD over the trainable (new) layers at ``fit.lr x fit.lr_scale`` (PFENet's effective rate), poly decay."""
    params = list(as_segmenter(unwrap(model)).trainable_parameters())
    if not params:
        raise ConfigError("fit: the model has no trainable parameters (a training-free plugin needs no fit)")
    group = {"params": params, "lr": cfg.fit.effective_lr, "name": "new layers", "lr_scale": cfg.fit.lr_scale}
    opt = torch.optim.SGD([group], lr=cfg.fit.effective_lr, momentum=cfg.fit.momentum, weight_decay=cfg.fit.weight_decay)
    # PFENet's poly_learning_rate: lr * (1 - iter / max_iter) ** power, on every group
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=steps, power=cfg.fit.power)
    return opt, sched


def forward_batch(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, Any]:
    """One training batch through the model: from images, or from cached frozen features."""
    if any(k.startswith("q.") for k in batch):
        q, s = fcache.split_batch(batch, device)
        out: dict[str, Any] = model(encoded=(q, s, tuple(batch["target"].shape[-2:])), **_oracle(model, batch, device))
        return out
    out = model(batch["query"].to(device), batch["support_images"].to(device), batch["support_masks"].to(device), **_oracle(model, batch, device))
    return out


def _oracle(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The query's label, for a model that asks for it: the oracle diagnostic only."""
    return {"query_label": batch["target"].to(device)} if getattr(unwrap(model), "wants_query_label", False) else {}


def train_steps(
    model: torch.nn.Module,
    loss_fn: Callable[[dict[str, Any], torch.Tensor], tuple[torch.Tensor, dict[str, float]]],
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    dataset: Dataset[dict[str, torch.Tensor]],
    *,
    batch_size: int,
    start_step: int,
    device: torch.device,
    loader_workers: int = 0,
    on_step: Callable[[int, dict[str, float]], bool | None] | None = None,
) -> int:
    """Run the optimiser over ``dataset`` (already cut to this worker's episodes from ``start_step``).
    ``on_step`` returning True stops early (base-val's patience ran out). Returns the step after the last one."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=loader_workers, drop_last=True)
    step = start_step
    model.train()
    for batch in loader:
        t0 = time.perf_counter()
        out = forward_batch(model, batch, device)
        loss, parts = loss_fn(out, batch["target"].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward has no annotations
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        step += 1
        if on_step is not None and on_step(step, {"loss": float(loss.detach()), **{k: float(v) for k, v in parts.items() if k != "loss"}, "lr": lr, "s_per_step": time.perf_counter() - t0}):
            break
    return step


def worker_indices(start: int, steps: int, global_batch: int, rank: int, per_worker: int) -> list[int]:
    """Episode indices this worker trains on from ``start``: step s, worker r, slot j -> s*G + r*b + j."""
    return [s * global_batch + rank * per_worker + j for s in range(start, steps) for j in range(per_worker)]


def train_sampler(cfg: FewShotConfig, source: EpisodeSource, fold: int, shots: int) -> TrainEpisodeSampler:
    """Training episodes of the fold's base classes, on the fit split's images less base-val's."""
    base, novel = fold_split(cfg, fold, source.class_index)
    keys = sorted({str(k) for ks in source.class_index.values() for k in ks})
    return TrainEpisodeSampler(
        source.class_index, benchmark=cfg.data.benchmark, fold=fold, shots=shots, seed=cfg.fit_seed,
        base=base, novel=novel, image_classes=source_image_classes(source), held_out=baseval.held_out(keys, cfg.fit.val_fraction, cfg.seed),
        novel_images=cfg.fit.novel_images,
    )  # fmt: skip


def score_sets(cfg: FewShotConfig, sampler: TrainEpisodeSampler, fold: int, shots: int) -> dict[str, baseval.FixedEpisodes]:
    """The fixed episodes fit scores as it trains: base-val (held-out images) and base-train."""
    val_pool = sampler.val_pool
    tag = f"{cfg.seed}/{cfg.data.benchmark}/{fold}/{shots}"
    out = {"base_val": baseval.FixedEpisodes(val_pool, shots, cfg.fit.val_episodes, f"{tag}/base-val")}
    if not len(out["base_val"]):  # no base-val (val_fraction 0, or too few held-out images): nothing is scored
        return {}
    if cfg.fit.train_eval_episodes:
        out["base_train"] = baseval.FixedEpisodes(sampler.pool, shots, cfg.fit.train_eval_episodes, f"{tag}/base-train")
    return out


def train_dataset(
    cfg: FewShotConfig, source: EpisodeSource, sampler: Callable[[int], Episode], indices: list[int], cache_root: str | None, seed: int
) -> TrainEpisodes | fcache.CachedTrainEpisodes:
    """Episodes as tensors; ``seed`` picks the views (the fit seed for training, the run's for the
    fixed base-val / base-train sets, so every fit seed is scored on the same views)."""
    if cache_root is not None:
        return fcache.CachedTrainEpisodes(fcache.FeatureCache(Path(cache_root)), sampler, seed, indices)
    return TrainEpisodes(source, sampler, cfg.image_size, seed, indices, cfg.fit.scale)


class _FitState:
    """A fit worker's trainable state: the model, SGD and its schedule, and base-val's monitor."""

    def __init__(self, cfg: FewShotConfig, model: torch.nn.Module, steps: int) -> None:
        self.cfg, self.model = cfg, model
        self.optimizer, self.scheduler = make_optimizer(model, cfg, steps)
        self.monitor = baseval.Monitor(cfg.fit.patience)

    def load(self, state: dict[str, Any], folder: Path) -> int:
        load_trainable_state(self.model, state["model"], f"{folder}/state.pt")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.monitor = baseval.Monitor.from_state(state.get("monitor"), self.cfg.fit.patience)
        return int(state["step"])

    def state(self, step: int, fold: int, shots: int) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT, "model": trainable_state(self.model), "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "step": step, "fold": fold, "shots": shots, "monitor": self.monitor.state_dict(),
        }  # fmt: skip


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: everything comes from ``config``; state from ``ray.train.get_checkpoint()``."""
    cfg = FewShotConfig.model_validate(config["cfg"])
    plugin, fold, shots = config["plugin"], int(config["fold"]), int(config["shots"])
    session = WorkerSession(run_dir(cfg, fold, shots) if "://" not in cfg.fit.storage_path else None, config.get("metrics_actor"), cfg.fit.fault)
    torch.set_num_threads(max(1, cfg.fit.cpus_per_worker))
    rank, device, cache_root = session.rank, session.device, config.get("cache_root")
    source = CachedSource(open_source(cfg, config.get("source")))
    sampler = train_sampler(cfg, source, fold, shots)
    steps = total_steps(cfg, sampler)
    torch.manual_seed(cfg.fit_seed)  # same initial weights on every worker
    fs = _FitState(cfg, build(plugin, cfg).to(device), steps)
    scored = {name: (eps, train_dataset(cfg, source, eps, list(range(len(eps))), cache_root, cfg.seed)) for name, eps in score_sets(cfg, sampler, fold, shots).items()}
    step = 0
    if (resumed := session.resume(load_fit_state)) is not None:
        step = fs.load(*resumed)
    else:
        torch.manual_seed(seeds.worker(cfg.fit_seed, rank))  # per-worker randomness (dropout)
    resumed_from = step
    # a run that base-val already stopped trains nothing more when it is resumed
    end = step if fs.monitor.stopped else min(steps, cfg.fit.stop_at_step) if cfg.fit.stop_at_step is not None else steps
    net = session.ddp(fs.model, find_unused=True)
    per_worker = cfg.fit.batch_size // session.world
    dataset = train_dataset(cfg, source, sampler, worker_indices(step, end, cfg.fit.batch_size, rank, per_worker), cache_root, cfg.fit_seed)
    session.push({"event": "start", "step": step, "total_steps": steps, "resumed_from_step": resumed_from})
    losses: list[float] = []  # since the last checkpoint
    interval: list[float] = []  # since the last base-val evaluation

    def on_step(s: int, metrics: dict[str, float]) -> bool:
        losses.append(metrics["loss"])
        interval.append(metrics["loss"])
        m = {"step": s, "total_steps": steps, "fold": fold, "shots": shots, "resumed_from_step": resumed_from, **metrics}
        session.push(m)
        stop = False
        if scored and (s % cfg.fit.eval_every == 0 or s == steps):  # steps, not end: a run stopped and resumed scores where a whole one does
            # every rank scores the same fixed episodes with the same weights, so all stop together
            row = {f"{name}_miou": baseval.score(fs.model, data, eps, lambda mod, b: forward_batch(mod, b, device))["miou"] for name, (eps, data) in scored.items()}
            row["loss_mean"] = sum(interval) / len(interval)
            interval.clear()
            stop = fs.monitor.update(s, row, lambda: trainable_state(fs.model))
            session.push({"event": "eval", "step": s, "total_steps": steps, **row, "best_step": fs.monitor.best_step, "stopped": stop})
        if s % cfg.fit.checkpoint_every == 0 or s == end or stop:
            reported = dict(m, loss_mean=sum(losses) / len(losses))
            on_file = dict(reported, stopped=fs.monitor.stopped, best_step=fs.monitor.best_step)
            session.checkpoint(s, reported, lambda: fs.state(s, fold, shots), file_metrics=on_file)
            losses.clear()
            session.maybe_die(s)
        return stop

    train_steps(net, as_segmenter(unwrap(net)).loss, fs.optimizer, fs.scheduler, dataset, batch_size=per_worker, start_step=step, device=device, loader_workers=cfg.fit.loader_workers, on_step=on_step)
    session.push({"event": "done", "step": steps})


def _source_digest(cfg: FewShotConfig, source: EpisodeSource | None) -> str:
    """The fit shards' sha256 (their manifests list every shard's), or an in-memory source's own digest."""
    shards = cfg.data.shards
    if source is None and shards:
        from glocon.data.manifest import Manifest

        paths = [shards] if isinstance(shards, str) else shards
        return hashlib.sha256("".join(e.sha256 for p in paths for e in Manifest.load(p).shards).encode()).hexdigest()[:20]
    return str(getattr(source, "digest", lambda: type(source).__name__)())


def prepare_cache(plugin: FewShotPlugin, cfg: FewShotConfig, fold: int, source: EpisodeSource | None, log: Callable[[str], None]) -> str | None:
    """Build (or reuse) the fold's frozen-feature cache in the driver; None when it cannot serve."""
    if not cfg.fit.cache.enabled:
        return None
    torch.manual_seed(cfg.seed)
    model = build(plugin, cfg)
    ok, why = fcache.can_cache(model)
    if not ok:
        log(f"fit cache off for plugin {plugin.name!r}: {why}")
        return None
    src = CachedSource(open_source(cfg, source))
    sampler = train_sampler(cfg, src, fold, min(cfg.fit.shots))  # the fewest shots: the largest pool, a superset of the others
    spec = fcache.ViewSpec(cfg.image_size, (cfg.fit.scale[0], cfg.fit.scale[1]), cfg.fit.cache.views, cfg.seed)
    key = fcache.digest({
        "shards": _source_digest(cfg, source), "plugin": plugin.name, "prior": sha256_file(cfg.prior) if cfg.prior else None,
        # what the frozen encoders depend on, when the model can say (rows differing only in the head share a cache)
        "model": getattr(model, "encoder_key")() if hasattr(model, "encoder_key") else cfg.model,
        "spec": spec.__dict__, "pool": sampler.full_pool, "format": fcache.FORMAT,
    })  # fmt: skip
    root = Path(cfg.fit.cache.dir or Path(cfg.fit.storage_path) / "cache") / f"fold{fold}-{key}"
    t0 = time.perf_counter()
    fcache.build_cache(root, model, src, sampler.full_pool, spec, log, store=open_store(cfg.store))  # base-val's held-out images too
    log(f"fit cache ready in {time.perf_counter() - t0:.1f} s: {root}")
    return str(root)


def fit(plugin: FewShotPlugin, cfg: FewShotConfig | Mapping[str, Any], source: EpisodeSource | None = None) -> dict[str, Any]:
    """Train ``plugin``'s model on base-class episodes of every fold, one model per ``fit.shots``.

    Writes ``<storage_path>/<name>-fold<f>-<K>shot/model.pt`` (the trainable state) per fold and
    shot count, plus the resolved config. Rerunning with the same ``fit.name`` resumes each run
    from its last checkpoint (a finished run is not retrained).
    """
    if isinstance(cfg, Mapping):
        cfg = FewShotConfig.model_validate(cfg)
    if not getattr(plugin, "trainable", False):
        return {"plugin": plugin.name, "trained": False, "reason": "training-free plugin: nothing to fit"}
    from glocon.preflight import check_fewshot
    from glocon.raycluster import init_ray

    cfg = resolve_paths(cfg)
    if source is None:
        check_fewshot(cfg, "fit")  # before Ray starts: missing shards, prior or split folder
    init_ray(cfg.ray)
    summary: dict[str, Any] = {"plugin": plugin.name, "trained": True, "folds": {}}
    for fold in folds_of(cfg):
        cache_root = None
        for shots in cfg.fit.shots:
            with Dashboard(f"fewshot fit {plugin.name} fold {fold} {shots}-shot", unit="steps") as dash:
                if cache_root is None:
                    cache_root = prepare_cache(plugin, cfg, fold, source, dash.log) or ""
                info = _fit_one(plugin, cfg, fold, shots, source, cache_root or None, dash)
            summary["folds"].setdefault(fold, {})[shots] = info
    return summary


def _fit_one(plugin: FewShotPlugin, cfg: FewShotConfig, fold: int, shots: int, source: EpisodeSource | None, cache_root: str | None, dash: Dashboard) -> dict[str, Any]:
    from glocon.train.metrics_actor import MetricsActor

    storage = str(Path(cfg.fit.storage_path).resolve()) if "://" not in cfg.fit.storage_path else cfg.fit.storage_path
    save_resolved(cfg, run_dir(cfg, fold, shots))
    actor = MetricsActor.remote()  # type: ignore[attr-defined]  # @ray.remote adds .remote at run time; mypy sees the plain class
    loop_config = {"cfg": resolve_paths(cfg).model_dump(mode="json"), "plugin": plugin, "fold": fold, "shots": shots, "source": source, "metrics_actor": actor, "cache_root": cache_root}
    spec = RunSpec(
        name=run_name(cfg, fold, shots), storage_path=storage, num_workers=cfg.fit.num_workers, cpus_per_worker=cfg.fit.cpus_per_worker,
        num_to_keep=cfg.fit.num_to_keep, max_failures=cfg.fit.max_failures,
    )  # fmt: skip
    trainer = build_trainer(train_loop_per_worker, loop_config, spec)
    tb = tblog.run_log(run_dir(cfg, fold, shots), "fit")  # <run>/tb/ for TensorBoard (optional)

    def on_metrics(m: dict[str, Any]) -> None:
        tb.log(m)
        if m.get("event") == "start":
            dash.update(completed=m["step"], total=m["total_steps"])
            if m.get("resumed_from_step"):
                dash.log(f"resumed from step {m['resumed_from_step']}")
        elif m.get("event") == "eval":
            scores = "  ".join(f"{k[: -len('_miou')].replace('_', '-')} mIoU {100 * v:.1f}" for k, v in m.items() if k.endswith("_miou"))
            dash.log(f"step {m['step']}: {scores}  (best step {m['best_step']}){'  stopping: no gain in fit.patience evaluations' if m.get('stopped') else ''}")
        elif "loss" in m:
            dash.update(completed=m["step"], total=m["total_steps"], loss=m["loss"], lr=m["lr"])

    result, history = fit_with_feed(trainer, actor, on_metrics)
    tb.close()
    if (error := getattr(result, "error", None)) is not None:
        raise error
    # The newest checkpoint that loads; a finished run whose last checkpoint was damaged after
    # the fact is then reported incomplete (rerun to finish it), never read as valid.
    folder_of_run = run_dir(cfg, fold, shots)
    state, folder = load_resumable(checkpoint_folder(result, folder_of_run), folder_of_run, loader=load_fit_state)
    metrics = json.loads((folder / "metrics.json").read_text())
    step, steps = int(state["step"]), int(metrics["total_steps"])
    losses = [m["loss"] for m in history if "loss" in m]
    atomic_write_json(folder_of_run / "history.json", history)
    monitor = baseval.Monitor.from_state(state.get("monitor"), cfg.fit.patience)
    done = step >= steps or monitor.stopped
    out = model_path(cfg, fold, shots)
    # the weights base-val scored best (the last ones when there is no base-val)
    kept = monitor.best_state if monitor.best_state is not None else state["model"]
    fit_info: dict[str, Any] = {  # a JSON record (curve.json, model.pt's info) of mixed values
        "best_step": monitor.best_step if monitor.best_state is not None else step, "best_base_val_miou": monitor.best_score if monitor.curve else None,
        "stopped_early": monitor.stopped, "curve": monitor.curve,
    }  # fmt: skip
    if not monitor.curve and cfg.fit.val_fraction > 0:
        dash.log(f"no base-val: fewer than {shots + 1} held-out images of any base class (fit.val_fraction={cfg.fit.val_fraction}); kept the last step")
    if monitor.curve:
        atomic_write_json(folder_of_run / "curve.json", fit_info)
        plot_fit_curves(monitor.curve, folder_of_run / "curves.png", f"{plugin.name} fit, fold {fold}, {shots}-shot", fit_info["best_step"])
    if done:
        base, novel = fold_split(cfg, fold, open_source(cfg, source, "fit").class_index)
        info = {"step": step, "metrics": metrics, "cache": cache_root, **{k: v for k, v in fit_info.items() if k != "curve"}}
        save_model_file(out, plugin, cfg, fold, shots, kept, info, {"benchmark": cfg.data.benchmark, "base": base, "novel": novel})
    return {
        **fit_info,
        "model": str(out) if done else None,
        "step": step,
        "total_steps": steps,
        "complete": done,
        "checkpoint": str(folder),
        "cache": cache_root,
        "resumed_from_step": next((m.get("resumed_from_step") for m in history if m.get("event") == "start"), None),
        # every (re)start of the worker group in this call: [0, 4] = a fresh run whose workers restarted at step 4
        "starts": [m.get("resumed_from_step") for m in history if m.get("event") == "start"],
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "metrics": metrics,
    }
