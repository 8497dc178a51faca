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
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from glocon import seeds
from glocon.io import atomic_write_json
from glocon.models.prior import PriorExtractor, save_export
from glocon.train.checkpoint import METRICS, PRIOR, CheckpointNames, load_resumable, load_tensors, rng_file, rng_state, save_state, save_tensors, set_rng_state
from glocon.train.config import PretrainConfig
from glocon.train.faults import maybe_die
from glocon.data.shardset import ShardSet
from glocon.train.data import view_batches, worker_samples
from glocon.train.momentum import momentum_twin, update_momentum
from glocon.train.queues import KeyQueue
from glocon.train.step import forward_losses
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


def _maybe_die(cfg: PretrainConfig, step: int, rank: int) -> None:
    maybe_die(cfg.fault, step, rank)


def _local_storage(cfg: PretrainConfig) -> Path | None:
    return None if "://" in cfg.storage_path else Path(cfg.storage_path) / cfg.name


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    from glocon.raycluster import quiet_train_reports

    quiet_train_reports()

    cfg = PretrainConfig.model_validate(config["cfg"])
    actor = config.get("metrics_actor")
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    use_amp = cfg.amp and device.type == "cuda"

    # Same seed for the weights on every worker (the twin is copied before DDP broadcasts).
    torch.manual_seed(cfg.seed)
    model = PriorExtractor(cfg.model).to(device)
    model.backbone.freeze_(cfg.freeze, cfg.freeze_bn_stats)  # before the twin is copied: it keeps the same stages frozen
    twin = momentum_twin(model).to(device)
    dim = cfg.model.proj_dim
    queue_g = KeyQueue(cfg.loss.queue_global, dim, seed=seeds.queue(cfg.seed, "global"), device=device, start=cfg.loss.queue_start)
    queue_l = KeyQueue(cfg.loss.queue_local, dim, seed=seeds.queue(cfg.seed, "local"), device=device, start=cfg.loss.queue_start)
    torch.manual_seed(seeds.worker(cfg.seed, rank))  # then per-worker randomness (views)

    urls = [u for spec in (cfg.data.shards, *cfg.data.extra_shards) for u in ShardSet.open(spec).urls]
    n_samples = cfg.data.samples_per_epoch or sum(ShardSet.open(spec).count for spec in (cfg.data.shards, *cfg.data.extra_shards))
    steps_per_epoch = n_samples // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{n_samples} samples in {cfg.data.shards} give no full global batch of {cfg.batch_size}")
    total_steps = steps_per_epoch * cfg.epochs

    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay)
    warmup = int(round(cfg.optim.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total_steps, cfg.optim.schedule, warmup))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    step, resumed_from, resumed_sha = 0, -1, ""
    checkpoint_name = CheckpointNames(cfg.run_dir if "://" not in cfg.storage_path else None)  # before this attempt writes any
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as latest:
            # A truncated latest checkpoint (killed mid-write, full disk) falls back to the newest good one.
            state, folder = load_resumable(latest, cfg.run_dir if "://" not in cfg.storage_path else None)
            model.load_state_dict(state["model"])
            twin.load_state_dict(state["twin"])
            queue_g.load_state_dict(state["queue_global"])
            queue_l.load_state_dict(state["queue_local"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if "scaler" in state and use_amp:
                scaler.load_state_dict(state["scaler"])
            step = int(state["step"])
            if (Path(folder) / rng_file(rank)).is_file():
                set_rng_state(load_tensors(Path(folder) / rng_file(rank)))
        resumed_from, resumed_sha = step, queue_digest(queue_l) + queue_digest(queue_g)

    # Query encoder gradients are averaged by DDP (gloo on CPU, NCCL on GPU); a zero loss weight
    # leaves one head unused, which DDP must be told about.
    unused = not (cfg.loss.w_global and cfg.loss.w_local)
    net = DistributedDataParallel(model, find_unused_parameters=unused) if world > 1 else model
    views = TwoViews(cfg.data.image_size, cfg.views)
    per_worker = cfg.per_worker_batch
    since_report: list[float] = []
    last_ckpt = ""
    local_run = _local_storage(cfg)

    def push(metrics: dict[str, Any]) -> None:
        if actor is not None and rank == 0:
            actor.push.remote(metrics)

    push({"event": "start", "step": step, "total_steps": total_steps, "steps_per_epoch": steps_per_epoch, "resumed_from_step": resumed_from})

    prober = None
    if cfg.probe.every_epochs and rank == 0:
        from glocon.probe.run import EpochProber

        p = cfg.probe
        prober = EpochProber(p.train_shards or cfg.data.shards, p.val_shards, p.limit, p.input_size, p.map)

    def report(metrics: dict[str, Any], epoch_end: bool) -> str:
        name = checkpoint_name(step)
        if prober is not None and epoch_end and (metrics["epoch"] + 1) % cfg.probe.every_epochs == 0:
            t_probe = time.perf_counter()
            metrics["probe_retrieval_miou"] = prober(model)  # rank 0 only; the others wait at the next collective
            push({"event": "probe", "step": step, "epoch": metrics["epoch"], "retrieval_miou": metrics["probe_retrieval_miou"], "seconds": time.perf_counter() - t_probe})
        with tempfile.TemporaryDirectory(prefix="glocon-ckpt-") as tmp:
            if rank == 0:
                save_state(
                    tmp,
                    {
                        "model": model.state_dict(),
                        "twin": twin.state_dict(),
                        "queue_global": queue_g.state_dict(),
                        "queue_local": queue_l.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(),
                        "step": step,
                        "epoch": metrics["epoch"],
                        "config": cfg.model_dump(mode="json"),
                    },
                )
                atomic_write_json(Path(tmp) / METRICS, metrics)
                if epoch_end:
                    extra = {"step": step, "epoch": metrics["epoch"], "run": cfg.name, "protocol": cfg.protocol}
                    save_export(model, Path(tmp) / PRIOR, extra=extra)
                    if cfg.checkpoint.epoch_exports and local_run is not None:
                        out = local_run / "epochs" / f"epoch-{metrics['epoch']:04d}"
                        save_export(model, out / PRIOR, extra=extra)
                        atomic_write_json(out / METRICS, metrics)
            save_tensors(Path(tmp) / rng_file(rank), rng_state())
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp), checkpoint_dir_name=name)
        return name

    start_epoch = step // steps_per_epoch
    for epoch in range(start_epoch, cfg.epochs):
        first = step - epoch * steps_per_epoch
        stream = worker_samples(urls, rank, world, seed=seeds.epoch_stream(cfg.seed, epoch, first), shuffle_buffer=cfg.data.shuffle_buffer, resampled=cfg.data.resampled, epoch_samples=(steps_per_epoch - first) * per_worker)
        batches = view_batches(stream, views, cfg.data.patch_method, per_worker)
        for _ in range(first, steps_per_epoch):
            _maybe_die(cfg, step, rank)
            t0 = time.perf_counter()
            batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
            update_momentum(model, twin, cfg.momentum)  # MoCo updates the key encoder before encoding keys
            g = torch.Generator().manual_seed(seeds.patch_sampling(cfg.seed, step, rank))
            parts = forward_losses(
                net, twin, batch, queue_g, queue_l,
                tau=cfg.loss.tau, w_global=cfg.loss.w_global, w_local=cfg.loss.w_local,
                max_patches=cfg.loss.max_patches, min_patch_area=cfg.loss.min_patch_area, pooling=cfg.loss.pooling,
                bn=cfg.bn, seed=cfg.seed, step=step, generator=g, amp=use_amp,
            )  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(parts.total).backward()
            scaler.step(optimizer)
            scaler.update()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            if cfg.loss.w_global:
                queue_g.gather_and_enqueue(parts.keys_global)
            if cfg.loss.w_local:
                queue_l.gather_and_enqueue(parts.keys_local)
            step += 1
            dt = time.perf_counter() - t0
            loss = float(parts.total.detach())
            since_report.append(loss)
            metrics = {
                "step": step,
                "epoch": epoch,
                "total_steps": total_steps,
                "loss": loss,
                "L_global": float(parts.L_global),
                "L_local": float(parts.L_local),
                "lr": lr,
                "images_per_s": per_worker * world / dt,
                "queue_fill_global": queue_g.fill,
                "queue_fill_local": queue_l.fill,
                "patches": parts.n_patches,
                "patches_per_image": parts.n_patches / per_worker,  # on this worker; L_local's pairs per view
                "resumed_from_step": resumed_from,
            }
            push(metrics)
            epoch_end = step % steps_per_epoch == 0
            stop = cfg.stop_at_step is not None and step >= cfg.stop_at_step
            if epoch_end or stop or step % cfg.checkpoint.every_steps == 0:
                reported = dict(
                    metrics,
                    loss_mean=sum(since_report) / len(since_report),
                    epoch_end=epoch_end,
                    resumed_queue_sha=resumed_sha,
                    previous_checkpoint=last_ckpt,
                )
                last_ckpt = report(reported, epoch_end)
                since_report = []
                push({"event": "checkpoint", "step": step, "epoch": epoch, "checkpoint": last_ckpt, "epoch_end": epoch_end})
            if stop:
                push({"event": "stopped", "step": step})
                return
    push({"event": "done", "step": step})


