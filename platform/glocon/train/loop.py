"""``train_loop_per_worker(config)``: what every Ray Train worker runs.

Everything comes from ``config`` (the PretrainConfig as a dict under "cfg", and optionally the
metrics actor under "metrics_actor"); state comes from ``ray.train.get_checkpoint()`` and leaves
through ``ray.train.report(metrics, checkpoint=...)``, as in Ray's own examples. Nothing global.

Resume: the latest checkpoint restores model, twin, queues, optimizer, scheduler, scaler, step,
epoch and this worker's RNG states; the epoch continues at the saved step with a fresh,
seeded shard order (samples already seen in that epoch may come again; none is skipped for good).
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Any

import torch

from glocon import seeds
from glocon.io import atomic_write_json
from glocon.models.prior import PriorExtractor, save_export
from glocon.data.shardset import ShardSet
from glocon.train.checkpoint import METRICS, PRIOR, load_state, stamped
from glocon.train.config import PretrainConfig
from glocon.train.data import view_batches, worker_samples
from glocon.train.momentum import momentum_twin, update_momentum
from glocon.train.queues import KeyQueue
from glocon.train.run import WorkerSession
from glocon.train.step import LossParts, forward_losses
from glocon.train.views import TwoViews


def queue_digest(queue: KeyQueue) -> str:
    """sha256 of a queue's keys, pointer and count: proves a resumed run has the saved queue."""
    h = hashlib.sha256(queue.keys.detach().cpu().float().numpy().tobytes())
    h.update(f"{queue.ptr}:{queue.count}".encode())
    return h.hexdigest()[:16]


def lr_lambda(total_steps: int, schedule: str, warmup_steps: int = 0):
    """Multiplier of the base lr at step s: a linear warm-up over ``warmup_steps`` (MoCo v3, SimCLR),
    then constant or MoCo v2's cosine (``--cos``, per step here): 0.5 (1 + cos(pi t / T)) over the rest."""

    def f(s: int) -> float:
        if s < warmup_steps:
            return (s + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        t, span = s - warmup_steps, max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(t, span) / span))

    return f


def _local_storage(cfg: PretrainConfig) -> Path | None:
    return None if "://" in cfg.storage_path else cfg.run_dir


def epoch_plan(cfg: PretrainConfig) -> tuple[list[str], int, int]:
    """The shard urls, steps per epoch (full global batches) and total steps of a run."""
    specs = (cfg.data.shards, *cfg.data.extra_shards)
    urls = [u for spec in specs for u in ShardSet.open(spec).urls]
    n_samples = cfg.data.samples_per_epoch or sum(ShardSet.open(spec).count for spec in specs)
    steps_per_epoch = n_samples // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{n_samples} samples in {cfg.data.shards} give no full global batch of {cfg.batch_size}")
    return urls, steps_per_epoch, steps_per_epoch * cfg.epochs


class Pretraining:
    """The method's state on one worker, in MoCo's builder style: the query encoder, its momentum
    twin, both key queues (Eq. 5 and 6's negatives), SGD, the lr schedule and the AMP scaler."""

    def __init__(self, cfg: PretrainConfig, device: torch.device, rank: int, steps_per_epoch: int, total_steps: int) -> None:
        self.cfg, self.amp = cfg, cfg.amp and device.type == "cuda"
        # Same seed for the weights on every worker (the twin is copied before DDP broadcasts).
        torch.manual_seed(cfg.seed)
        self.model = PriorExtractor(cfg.model).to(device)
        self.model.backbone.freeze_(cfg.freeze, cfg.freeze_bn_stats)  # before the twin is copied: it keeps the same stages frozen
        self.twin = momentum_twin(self.model).to(device)
        dim, loss = cfg.model.proj_dim, cfg.loss
        self.queue_g = KeyQueue(loss.queue_global, dim, seed=seeds.queue(cfg.seed, "global"), device=device, start=loss.queue_start)
        self.queue_l = KeyQueue(loss.queue_local, dim, seed=seeds.queue(cfg.seed, "local"), device=device, start=loss.queue_start)
        torch.manual_seed(seeds.worker(cfg.seed, rank))  # then per-worker randomness (views)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay)
        warmup = int(round(cfg.optim.warmup_epochs * steps_per_epoch))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(total_steps, cfg.optim.schedule, warmup))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

    def state(self, step: int, epoch: int) -> dict[str, Any]:
        return stamped({
            "model": self.model.state_dict(), "twin": self.twin.state_dict(),
            "queue_global": self.queue_g.state_dict(), "queue_local": self.queue_l.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "step": step, "epoch": epoch, "config": self.cfg.model_dump(mode="json"),
        })  # fmt: skip

    def load(self, state: dict[str, Any]) -> int:
        """Restore a checkpoint's state; returns its step."""
        self.model.load_state_dict(state["model"])
        self.twin.load_state_dict(state["twin"])
        self.queue_g.load_state_dict(state["queue_global"])
        self.queue_l.load_state_dict(state["queue_local"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state and self.amp:
            self.scaler.load_state_dict(state["scaler"])
        return int(state["step"])

    def queues_sha(self) -> str:
        return queue_digest(self.queue_l) + queue_digest(self.queue_g)

    def step(self, net: torch.nn.Module, batch: dict[str, torch.Tensor], step: int, rank: int) -> tuple[LossParts, float]:
        """One optimiser step of Eq. (7) (momentum update, both losses, enqueue); (loss parts, lr used)."""
        cfg = self.cfg
        update_momentum(self.model, self.twin, cfg.momentum)  # MoCo updates the key encoder before encoding keys
        g = torch.Generator().manual_seed(seeds.patch_sampling(cfg.seed, step, rank))
        parts = forward_losses(
            net, self.twin, batch, self.queue_g, self.queue_l,
            tau=cfg.loss.tau, w_global=cfg.loss.w_global, w_local=cfg.loss.w_local,
            max_patches=cfg.loss.max_patches, min_patch_area=cfg.loss.min_patch_area, pooling=cfg.loss.pooling,
            bn=cfg.bn, seed=cfg.seed, step=step, generator=g, amp=self.amp,
        )  # fmt: skip
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(parts.total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        if cfg.loss.w_global:
            self.queue_g.gather_and_enqueue(parts.keys_global)
        if cfg.loss.w_local:
            self.queue_l.gather_and_enqueue(parts.keys_local)
        return parts, lr


class _Checkpoints:
    """Rank 0's epoch-end probe and exports around each checkpoint report, and the loss mean since the last one."""

    def __init__(self, cfg: PretrainConfig, session: WorkerSession, method: Pretraining, resumed_sha: str) -> None:
        self.cfg, self.session, self.method, self.resumed_sha = cfg, session, method, resumed_sha
        self.losses: list[float] = []
        self.last = ""
        self.prober = None
        if cfg.probe.every_epochs and session.rank == 0:
            from glocon.probe.run import EpochProber

            p = cfg.probe
            self.prober = EpochProber(p.train_shards or cfg.data.shards, p.val_shards, p.limit, p.input_size, p.map)

    def after_step(self, metrics: dict[str, Any], epoch_end: bool, stop: bool) -> None:
        cfg, step = self.cfg, metrics["step"]
        self.losses.append(metrics["loss"])
        if not (epoch_end or stop or step % cfg.checkpoint.every_steps == 0):
            return
        reported = dict(metrics, loss_mean=sum(self.losses) / len(self.losses), epoch_end=epoch_end, resumed_queue_sha=self.resumed_sha, previous_checkpoint=self.last)
        if self.prober is not None and epoch_end and (metrics["epoch"] + 1) % cfg.probe.every_epochs == 0:
            t_probe = time.perf_counter()
            reported["probe_retrieval_miou"] = self.prober(self.method.model)  # rank 0 only; the others wait at the next collective
            self.session.push({"event": "probe", "step": step, "epoch": metrics["epoch"], "retrieval_miou": reported["probe_retrieval_miou"], "seconds": time.perf_counter() - t_probe})
        self.last = self.session.checkpoint(step, reported, lambda: self.method.state(step, metrics["epoch"]), extra=self._exports(reported) if epoch_end else None)
        self.losses = []
        self.session.push({"event": "checkpoint", "step": step, "epoch": metrics["epoch"], "checkpoint": self.last, "epoch_end": epoch_end})

    def _exports(self, metrics: dict[str, Any]) -> Any:
        """An epoch end's prior export inside the checkpoint, and (local storage) in ``epochs/``."""
        cfg, model = self.cfg, self.method.model
        extra = {"step": metrics["step"], "epoch": metrics["epoch"], "run": cfg.name, "protocol": cfg.protocol}

        def write(folder: Path) -> None:
            save_export(model, folder / PRIOR, extra=extra)
            if cfg.checkpoint.epoch_exports and self.session.run_dir is not None:
                out = self.session.run_dir / "epochs" / f"epoch-{metrics['epoch']:04d}"
                save_export(model, out / PRIOR, extra=extra)
                atomic_write_json(out / METRICS, metrics)

        return write


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: the PretrainConfig under "cfg", optionally the metrics actor under "metrics_actor"."""
    cfg = PretrainConfig.model_validate(config["cfg"])
    session = WorkerSession(_local_storage(cfg), config.get("metrics_actor"), cfg.fault)
    rank, world, device = session.rank, session.world, session.device
    urls, steps_per_epoch, total_steps = epoch_plan(cfg)
    method = Pretraining(cfg, device, rank, steps_per_epoch, total_steps)
    step, resumed_from, resumed_sha = 0, -1, ""
    if (resumed := session.resume(load_state)) is not None:
        step = method.load(resumed[0])
        resumed_from, resumed_sha = step, method.queues_sha()
    # a zero loss weight leaves one head unused, which DDP must be told about
    net = session.ddp(method.model, find_unused=not (cfg.loss.w_global and cfg.loss.w_local))
    views, per_worker = TwoViews(cfg.data.image_size, cfg.views), cfg.per_worker_batch
    checkpoints = _Checkpoints(cfg, session, method, resumed_sha)
    session.push({"event": "start", "step": step, "total_steps": total_steps, "steps_per_epoch": steps_per_epoch, "resumed_from_step": resumed_from})
    for epoch in range(step // steps_per_epoch, cfg.epochs):
        first = step - epoch * steps_per_epoch
        stream = worker_samples(urls, rank, world, seed=seeds.epoch_stream(cfg.seed, epoch, first), shuffle_buffer=cfg.data.shuffle_buffer, resampled=cfg.data.resampled, epoch_samples=(steps_per_epoch - first) * per_worker)
        batches = view_batches(stream, views, cfg.data.patch_method, per_worker)
        for _ in range(first, steps_per_epoch):
            session.maybe_die(step)
            t0 = time.perf_counter()
            batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
            parts, lr = method.step(net, batch, step, rank)
            step += 1
            metrics = {
                "step": step, "epoch": epoch, "total_steps": total_steps, "loss": float(parts.total.detach()),
                "L_global": float(parts.L_global), "L_local": float(parts.L_local), "lr": lr, "images_per_s": per_worker * world / (time.perf_counter() - t0),
                "queue_fill_global": method.queue_g.fill, "queue_fill_local": method.queue_l.fill, "patches": parts.n_patches,
                "patches_per_image": parts.n_patches / per_worker,  # on this worker; L_local's pairs per view
                "resumed_from_step": resumed_from,
            }  # fmt: skip
            session.push(metrics)
            stop = cfg.stop_at_step is not None and step >= cfg.stop_at_step
            checkpoints.after_step(metrics, step % steps_per_epoch == 0, stop)
            if stop:
                session.push({"event": "stopped", "step": step})
                return
    session.push({"event": "done", "step": step})
