"""``run_probe(cfg)``: judge every configured prior with the dense probe and write the results.

For each prior (and each seed where randomness enters: the memory draw, the linear probe's init
and batch order, the purity queries, and the weights of an untrained encoder), it extracts the
frozen dense map of the train and val images once and computes:

- ``retrieval_miou``: dense NN retrieval segmentation (``retrieval``);
- ``linear_miou``: the 1x1-conv linear probe (``linear``);
- ``purity``: balanced class purity@k of superpixel embeddings of the val images (``glocon.bank.stats``);
- ``prior_map``: AUROC of the prior region map between F and the prior (``priormap``).

Writes ``<out>/results.json`` and ``<out>/results.md`` (one row per prior, mean +- std over
seeds), and with ``run`` set, ``<out>/probe-vs-epoch.png``: each figure against pretraining epoch.
"""

from __future__ import annotations

import hashlib
import io
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from glocon.config import save_resolved
from glocon.ops import IGNORE_INDEX
from glocon.data.schema import Sample
from glocon.errors import ConfigError
from glocon.featstore import FeatureStore, StoreStats, open_store
from glocon.featstore.store import store_delta
from glocon.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from glocon.probe import features as pf
from glocon.probe import linear, priormap, retrieval
from glocon.probe.config import ProbeConfig
from glocon.probe.metrics import confusion, mean_std, miou

if TYPE_CHECKING:  # annotations only
    from glocon.models.prior import PriorExtractor

FIGURES = ("retrieval_miou", "linear_miou", "purity", "prior_map_auroc")
LABELS = {
    "retrieval_miou": "retrieval mIoU",
    "linear_miou": "linear-probe mIoU",
    "purity": "balanced purity@k",
    "prior_map_auroc": "prior-map AUROC",
}


# -- data --------------------------------------------------------------------------------------
def labelled_samples(spec: str, limit: int | None, key: str = "train_shards") -> list[Sample]:
    """The first ``limit`` samples with a mask of a shard set (``key`` names the config key in errors)."""
    from glocon.data.shardindex import ShardIndex
    from glocon.errors import DataError

    try:
        index = ShardIndex(spec)
    except (DataError, FileNotFoundError) as exc:
        raise ConfigError(f"probe: {key}={spec}: {exc}") from None
    out = []
    for sample_key in index.keys():
        s = index.get(sample_key)
        if s.mask is not None:
            out.append(s)
        if limit is not None and len(out) >= limit:
            break
    return out


def held_out(key: str, fraction: float) -> bool:
    """A stable split by key: the same key is on the same side in every run and process."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def load_splits(cfg: ProbeConfig) -> tuple[list[Sample], list[Sample]]:
    """(train, val) labelled samples: two shard sets, or one split by ``held_out``."""
    if not cfg.train_shards:
        raise ConfigError("probe: train_shards is empty; expected a labelled shard folder or manifest (glocon shards)")
    if cfg.val_shards:
        train, val = labelled_samples(cfg.train_shards, cfg.limit), labelled_samples(cfg.val_shards, cfg.limit, "val_shards")
        clash = {s.key for s in train} & {s.key for s in val}
        if clash:
            raise ConfigError(f"probe: {len(clash)} keys are in both train_shards and val_shards, e.g. {sorted(clash)[:3]}; the val images must be held out")
    else:
        both = labelled_samples(cfg.train_shards, None)
        train = [s for s in both if not held_out(s.key, cfg.val_fraction)][: cfg.limit]
        val = [s for s in both if held_out(s.key, cfg.val_fraction)][: cfg.limit]
    for name, split in (("train", train), ("val", val)):
        if not split:
            raise ConfigError(f"probe: the {name} split has no labelled image (train_shards={cfg.train_shards!r}, val_shards={cfg.val_shards!r})")
    return train, val


def count_classes(samples: list[Sample]) -> int:
    top = 0
    for s in samples:
        ids = np.unique(s.mask)
        ids = ids[ids != IGNORE_INDEX]
        if len(ids):
            top = max(top, int(ids.max()))
    return top + 1


# -- one prior ----------------------------------------------------------------------------------
def _seeded(spec: str, cfg: ProbeConfig) -> bool:
    """Does the encoder's weights depend on the seed (random weights that the probe reads)?"""
    if spec.startswith("random:"):
        return True
    if spec.startswith("init:"):
        return pf._arch_of(spec[5:]).weights is None or cfg.map == "local_head"
    if spec.startswith("imagenet:"):
        return cfg.map == "local_head"
    return False


def retrieval_miou(tr: pf.DenseSet, va: pf.DenseSet, n_classes: int, k: int, temperature: float, memory_size: int | None = None, seed: int = 0) -> float:
    """Dense NN retrieval segmentation of the val set from a memory of the train set: mIoU."""
    labs, share = zip(*[retrieval.cell_label_distribution(m, tr.grid, n_classes) for m in tr.masks])
    feats, labels = retrieval.build_memory(tr.cells(), np.concatenate(labs), np.concatenate(share), memory_size, seed)
    memory = retrieval.RetrievalMemory(feats, labels)
    votes = memory.vote(va.cells(), k, temperature)
    per = va.grid[0] * va.grid[1]
    conf = np.zeros((n_classes, n_classes), np.int64)
    for i, m in enumerate(va.masks):
        conf += confusion(retrieval.segment(votes[i * per : (i + 1) * per], va.grid, m.shape), m, n_classes)
    return miou(conf)


def patch_purity(va: pf.DenseSet, samples: list[Sample], cfg: ProbeConfig, seed: int) -> dict[str, Any]:
    from glocon.bank.embed import patch_table
    from glocon.bank.stats import balanced_purity
    from glocon.pooling import patch_weights, pool_patches

    vectors, classes, groups = [], [], []
    for i, s in enumerate(samples):
        labels = s.label_map(cfg.purity.patch_method)
        n = int(labels.max()) + 1
        w = patch_weights(torch.from_numpy(labels.astype(np.int64))[None], n, va.grid)
        pooled, area = pool_patches(torch.from_numpy(va.features[i : i + 1]), w)
        table = patch_table(labels, s.mask, n)
        cls = table["dominant_class"].astype(np.int64)
        cls[(table["dominant_frac"] < cfg.purity.min_dominant_frac) | (area[0].numpy() <= 0)] = -1
        vectors.append(retrieval.normalize_rows(pooled[0].numpy()))
        classes.append(cls)
        groups.append(np.full(n, i))
    return balanced_purity(
        np.concatenate(vectors), np.concatenate(classes), np.concatenate(groups),
        k=cfg.purity.k, per_class=cfg.purity.per_class, seed=seed, background=cfg.purity.background_class,
    )  # fmt: skip


def probe_prior(
    name: str, spec: str, cfg: ProbeConfig, train: list[Sample], val: list[Sample], n_classes: int,
    f_maps: tuple[np.ndarray, np.ndarray] | None, log: Callable[[str], None], store: FeatureStore | None = None,
) -> dict[str, Any]:
    seeded = _seeded(spec, cfg)
    runs: dict[str, list[float]] = {k: [] for k in FIGURES}
    detail: dict[str, Any] = {}
    encoder = None
    for seed in cfg.seeds:
        if encoder is None or seeded:
            t0 = time.perf_counter()
            encoder = pf.build_encoder(spec, seed)
            tr = pf.extract(encoder, train, cfg.map, cfg.input_size, cfg.batch_size, store)
            va = pf.extract(encoder, val, cfg.map, cfg.input_size, cfg.batch_size, store)
            log(f"{name}: {len(tr.keys)} train / {len(va.keys)} val images -> {tr.dim}-d map on a {tr.grid[0]}x{tr.grid[1]} grid ({time.perf_counter() - t0:.1f} s)")
            detail["grid"], detail["dim"] = list(tr.grid), tr.dim
            if cfg.prior_map.enabled and f_maps is not None:
                prior_val = va.features
                if cfg.prior_map.align == "lstsq":
                    prior_val = priormap.apply_alignment(va.features, priormap.fit_alignment(tr.features, f_maps[0]))
                pm = priormap.separability(f_maps[1], prior_val, va.masks)
                detail["prior_map"] = pm
                if pm.get("auroc") is not None:
                    runs["prior_map_auroc"].append(pm["auroc"])
        if cfg.retrieval.enabled:
            r = cfg.retrieval
            deterministic = r.memory_size is None and not seeded and runs["retrieval_miou"]
            # with every cell in the memory and fixed weights nothing random enters: one value, computed once
            if not deterministic:
                runs["retrieval_miou"].append(retrieval_miou(tr, va, n_classes, r.k, r.temperature, r.memory_size, seed))
        if cfg.linear.enabled:
            s = linear.LinearSettings(cfg.linear.epochs, cfg.linear.lr, cfg.linear.weight_decay, cfg.linear.batch_size)
            runs["linear_miou"].append(linear.linear_probe_miou(tr.features, tr.masks, va.features, va.masks, n_classes, seed, s)[0])
        if cfg.purity.enabled:
            p = patch_purity(va, val, cfg, seed)
            detail["purity_chance"] = p["chance"]
            detail["purity_background"] = p["background"]
            if p["macro"] is not None:
                runs["purity"].append(p["macro"])
    out: dict[str, Any] = {"spec": spec, "seeded_weights": seeded, **detail}
    for k, v in runs.items():
        out[k] = mean_std(v) if v else None
    return out


class EpochProber:
    """The cheap probe a pretraining worker runs at epoch ends: retrieval mIoU of its current model
    on a fixed, small labelled set (loaded once)."""

    def __init__(self, train_shards: str, val_shards: str, limit: int | None, input_size: int, which: str) -> None:
        cfg = ProbeConfig(train_shards=train_shards, val_shards=val_shards, limit=limit, input_size=input_size, map=which)
        self.cfg = cfg
        self.train, self.val = load_splits(cfg)
        self.n_classes = max(count_classes(self.train), count_classes(self.val))
        self.store = open_store()  # the demo's probe stage reads what this wrote, where weights and images agree

    def __call__(self, model: PriorExtractor) -> float:
        was_training = model.training
        model.eval()
        try:
            tr = pf.extract(model, self.train, self.cfg.map, self.cfg.input_size, self.cfg.batch_size, self.store)
            va = pf.extract(model, self.val, self.cfg.map, self.cfg.input_size, self.cfg.batch_size, self.store)
            r = self.cfg.retrieval
            return retrieval_miou(tr, va, self.n_classes, r.k, r.temperature)
        finally:
            model.train(was_training)


# -- all of them ------------------------------------------------------------------------------
def epoch_priors(run: str, every: int) -> dict[str, str]:
    """A pretraining run's per-epoch exports, plus the run at step 0, as {name: spec}."""
    from glocon.train.epochs import epoch_records

    root = Path(run)
    records = epoch_records(root.parent, root.name)
    if not records:
        raise ConfigError(f"probe: run {run!r} has no per-epoch exports (expected {root}/epochs/epoch-XXXX/prior.pt)")
    chosen = [r for r in records if (r.epoch + 1) % every == 0 or r is records[-1]]
    out = {"epoch 0": f"init:{records[0].prior_path}"}
    out.update({f"epoch {r.epoch + 1}": str(r.prior_path) for r in chosen})
    return out


def has_epoch_probe(run: str | Path) -> bool:
    """Whether a pretraining run's epoch-end probe recorded figures (``probe.every_epochs`` > 0)."""
    from glocon.train.epochs import epoch_records

    root = Path(run)
    return any(r.metrics.get("probe_retrieval_miou") is not None for r in epoch_records(root.parent, root.name))


def pretraining_epoch_figures(run: str) -> dict[str, dict[str, Any]]:
    """{"epoch N": {"retrieval_miou": ...}} from the figures a run's epoch-end probe recorded in its
    per-epoch metrics (``probe_retrieval_miou``): what pretraining measured, read, not recomputed."""
    from glocon.train.epochs import epoch_records

    root = Path(run)
    out = {f"epoch {r.epoch + 1}": {"retrieval_miou": mean_std([float(r.metrics["probe_retrieval_miou"])])}
           for r in epoch_records(root.parent, root.name) if r.metrics.get("probe_retrieval_miou") is not None}  # fmt: skip
    if not out:
        raise ConfigError(f"probe: epochs_from=pretraining, but run {run!r} recorded no epoch-end probe (its probe.every_epochs was 0?); use epochs_from=probe")
    return out


def run_probe(cfg: ProbeConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    priors = dict(cfg.priors)
    epoch_figures: dict[str, dict[str, Any]] = {}
    if cfg.run and cfg.epochs_from == "pretraining":
        epoch_figures = pretraining_epoch_figures(cfg.run)
    elif cfg.run:
        priors.update(epoch_priors(cfg.run, cfg.epochs_every))
    if not priors:
        raise ConfigError("probe: nothing to probe; give priors={name: spec} (an export, init:/random:<export>, imagenet:<backbone>) or run=<pretraining run>")
    out = Path(cfg.out)
    save_resolved(cfg, out)
    store = open_store(cfg.store)
    store_before = StoreStats(**vars(store.stats)) if store is not None else None
    t0 = time.perf_counter()
    train, val = load_splits(cfg)
    n_classes = cfg.n_classes or max(count_classes(train), count_classes(val))
    f_maps = None
    if cfg.prior_map.enabled:
        f_model = pf.build_encoder(cfg.prior_map.f, cfg.seeds[0])
        f_maps = tuple(pf.extract(f_model, split, cfg.prior_map.f_map, cfg.input_size, cfg.batch_size, store).features for split in (train, val))
    results: dict[str, Any] = {
        "format": "glocon.probe/v1",
        "train_images": len(train),
        "val_images": len(val),
        "n_classes": n_classes,
        "map": cfg.map,
        "input_size": cfg.input_size,
        "seeds": list(cfg.seeds),
        "priors": {},
        # with epochs_from=pretraining: the run's epoch-end probe figures, as it recorded them
        "epochs": {"from": "pretraining", "figures": epoch_figures} if epoch_figures else None,
    }
    for name, spec in priors.items():
        results["priors"][name] = probe_prior(name, spec, cfg, train, val, n_classes, f_maps, log, store)
        log(f"{name}: " + row_text(results["priors"][name]))
    results["seconds"] = round(time.perf_counter() - t0, 1)
    results["store"] = store_delta(store, store_before)
    results["config"] = cfg.model_dump(mode="json")
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", results_markdown(results))
    if cfg.run:
        plot_vs_epoch(results, out / "probe-vs-epoch.png")
    return results


# -- reporting ------------------------------------------------------------------------------
def fmt(stat: dict[str, Any] | None, scale: float = 100.0, digits: int = 1) -> str:
    if not stat:
        return "-"
    if stat["n"] > 1:
        return f"{scale * stat['mean']:.{digits}f} ± {scale * stat['std']:.{digits}f}"
    return f"{scale * stat['mean']:.{digits}f}"


def row_text(r: dict[str, Any]) -> str:
    return "  ".join(f"{LABELS[k]} {fmt(r.get(k), 1.0 if k == 'prior_map_auroc' else 100.0, 3 if k == 'prior_map_auroc' else 1)}" for k in FIGURES)


def results_markdown(results: dict[str, Any]) -> str:
    lines = [
        f"# Dense probe: {results['train_images']} train / {results['val_images']} val images, {results['n_classes']} classes, "
        f"map `{results['map']}` at {results['input_size']} px, seeds {results['seeds']}",
        "",
        "| prior | retrieval mIoU | linear-probe mIoU | balanced purity@k (chance) | prior-map AUROC (direction) |",
        "|---|---|---|---|---|",
    ]
    for name, r in results["priors"].items():
        pm = r.get("prior_map") or {}
        auroc = f"{fmt(r.get('prior_map_auroc'), 1.0, 3)} ({pm.get('direction', pm.get('reason', '-'))})" if r.get("prior_map_auroc") else f"- ({pm.get('reason', 'off')})"
        chance = r.get("purity_chance")
        purity = f"{fmt(r.get('purity'))} ({100 * chance:.1f})" if r.get("purity") and chance is not None else "-"
        lines.append(f"| {name} | {fmt(r.get('retrieval_miou'))} | {fmt(r.get('linear_miou'))} | {purity} | {auroc} |")
    lines += [
        "",
        "mIoU and purity in %, mean ± sample std over the seeds (one value where nothing random enters). "
        "AUROC < 0.5: the prior map is lower on objects than on background (the paper's Sec. IV-C).",
    ]
    recorded = (results.get("epochs") or {}).get("figures") or {}
    if recorded:
        curve = ", ".join(f"{n.split()[1]}: {100 * r['retrieval_miou']['mean']:.1f}" for n, r in recorded.items())
        lines += ["", f"Retrieval mIoU against pretraining epoch, as the run's own epoch-end probe measured it (its smaller image set; read, not recomputed): {curve}."]
    return "\n".join(lines) + "\n"


def plot_vs_epoch(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = {int(n.split()[1]): r for n, r in results["priors"].items() if n.startswith("epoch ")}
    recorded = (results.get("epochs") or {}).get("figures") or {}
    epochs.update({int(n.split()[1]): r for n, r in recorded.items()})
    others = {n: r for n, r in results["priors"].items() if not n.startswith("epoch ")}
    # with the curve read from pretraining's epoch-end probe, only the figures it measured have a curve
    shown = [k for k in FIGURES if any(r.get(k) for r in epochs.values())] if recorded else list(FIGURES)
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown) + (2 if len(shown) == 1 else 0), 3.2), dpi=100, squeeze=False)
    for ax, key in zip(axes[0], shown):
        xs = sorted(e for e, r in epochs.items() if r.get(key))
        if xs:
            ys = [epochs[e][key]["mean"] for e in xs]
            err = [epochs[e][key]["std"] for e in xs]
            label = "this run (its epoch-end probe)" if recorded else "this run"
            ax.errorbar(xs, ys, yerr=err, marker="o", ms=3, capsize=2, label=label)
        for i, (name, r) in enumerate(others.items()):
            if r.get(key):
                ax.axhline(r[key]["mean"], ls="--", lw=1, color=f"C{i + 1}", label=name)
        ax.set_title(LABELS[key])
        ax.set_xlabel("epochs of pretraining")
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
