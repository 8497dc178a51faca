"""``evaluate``: 1-shot and 5-shot episodes on the novel classes of every fold, on the eval split,
over ``eval.seeds`` episode files per (fold, shot), with the spread over seeds and a 95% bootstrap
interval; and ``compare``: two results on the same episodes, their paired difference.

Writes ``results.json`` + ``results.md``, the per-episode counts (``episode_counts.json``, what
``compare`` and the bootstrap read) and Fig. 5-style PNGs of the first seed's first episodes.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch

from glocon.config import save_resolved
from glocon.dashboard import Dashboard
from glocon.errors import ConfigError
from glocon.fewshot import stats
from glocon.fewshot.batches import CachedSource, load_eval_episode, stack_eval
from glocon.segmenter import region_maps_of
from glocon.fewshot.config import FewShotConfig
from glocon.featstore import StoreStats, open_store
from glocon.featstore.store import store_delta
from glocon.fewshot.encoded import EncodedEval
from glocon.fewshot.episodefile import EpisodeSet
from glocon.fewshot.episodes import episodes_for
from glocon.fewshot.metrics import ClassIoUAccumulator, RegionMapAccumulator, intersection_union
from glocon.fewshot.report import figure_caption, figure_png, results_markdown
from glocon.fewshot.sources import build, check_split_separation, class_names, eval_split, fold_split, folds_of, open_source, resolve_device, resolve_paths
from glocon.fewshot.state import check_split, load_model_file, load_trainable_state, weights_for
from glocon.fewshot.transforms import to_original
from glocon.io import atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_file

if TYPE_CHECKING:  # annotations only
    from glocon.fewshot.episodes import EpisodeSource
    from glocon.fewshot.plugin_protocol import FewShotPlugin

COUNTS = "episode_counts.json"


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


@torch.inference_mode()
def evaluate_episodes(
    model: torch.nn.Module, source: EpisodeSource, es: EpisodeSet, *, image_size: int, batch_size: int, device: torch.device,
    n_figure: int = 0, dash: Dashboard | None = None, features: EncodedEval | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:  # fmt: skip
    """Score ``model`` on every episode of ``es``; returns (results, Fig. 5 rows).

    With ``features`` (a model that splits its frozen encoders from its head), each image is
    encoded once for the whole evaluation and only the head runs per episode (``EncodedEval``).

    A model that declares ``region_maps`` (names of (B, 1, h, w) maps in [0, 1] its forward returns
    beside the logits) gets each scored against the masks and drawn in Fig. 5; the platform knows
    no map by name."""
    model.eval()
    region_maps = region_maps_of(model)
    acc = ClassIoUAccumulator(es.classes)
    regions: dict[str, RegionMapAccumulator] = {}
    per_episode: list[float] = []
    rows: list[list[float]] = []  # [class, I_bg, U_bg, I_fg, U_fg] per episode (glocon.fewshot.stats)
    figure: list[dict[str, Any]] = []
    # Digests of every logit and prediction: two runs are equal bit for bit iff these match.
    logits_sha, preds_sha = hashlib.sha256(), hashlib.sha256()
    for start in range(0, len(es.episodes), batch_size):
        batch = [load_eval_episode(source, e, image_size) for e in es.episodes[start : start + batch_size]]
        # only an oracle diagnostic (a model that says it wants it) ever sees the query's label
        extra = {"query_label": torch.stack([e.query_label for e in batch]).to(device)} if getattr(model, "wants_query_label", False) else {}
        if features is not None:
            out = model(encoded=features.encode(model, batch, device), **extra)
        else:
            q, s, m = stack_eval(batch)
            out = model(q.to(device), s.to(device), m.to(device), **extra)
        logits = out["logits"].float().cpu().contiguous()
        logits_sha.update(logits.numpy().tobytes())
        for i, ep in enumerate(batch):
            pred = to_original(logits[i : i + 1], ep.info).argmax(dim=1)[0]
            preds_sha.update(pred.to(torch.uint8).numpy().tobytes())
            inter, union = intersection_union(pred, ep.label)
            acc.add_counts(ep.episode.cls, inter, union)
            per_episode.append(float(inter[1] / union[1]) if union[1] > 0 else 0.0)
            rows.append([ep.episode.cls, float(inter[0]), float(union[0]), float(inter[1]), float(union[1])])
            maps: dict[str, Any] = {}
            for name in region_maps:  # the dense maps the model declares (QGNet: prior and guided, Fig. 5)
                maps[name] = None
                if out.get(name) is not None:
                    rm = to_original(out[name][i : i + 1].float().cpu(), ep.info)
                    regions.setdefault(name, RegionMapAccumulator()).update(rm, ep.label)
                    maps[name] = rm[0, 0].numpy()
            if len(figure) < n_figure:
                figure.append({
                    "support_image": ep.support_images[0], "support_label": ep.support_labels[0], "query_image": ep.query_image,
                    "maps": maps,
                    "prediction": pred.numpy(), "label": ep.label.numpy(), "caption": figure_caption(ep.episode.cls, per_episode[-1]),
                })  # fmt: skip
        if dash is not None:
            dash.advance(len(batch), mIoU=100 * acc.miou(), FB_IoU=100 * acc.fb_iou())
    results = {
        "miou": acc.miou(),
        "fb_iou": acc.fb_iou(),
        "class_iou": {str(c): v for c, v in acc.class_iou().items()},
        "class_episodes": {str(c): n for c, n in acc.episodes.items()},
        "class_intersection": {str(c): v for c, v in acc.intersection.items()},
        "class_union": {str(c): v for c, v in acc.union.items()},
        "mean_episode_iou": _mean(per_episode),
        # Eq. 14 counts a class no episode drew as 0 (PFENet, HSNet); with few episodes, say so apart.
        "miou_visited": _mean([v for c, v in acc.class_iou().items() if acc.episodes[c] > 0]),
        "classes_visited": sum(1 for n in acc.episodes.values() if n > 0),
        "episodes": len(per_episode),
        "region_maps": {name.replace("_region_map", ""): r.summary() for name, r in regions.items()},
        "logits_sha256": logits_sha.hexdigest(),
        "predictions_sha256": preds_sha.hexdigest(),
        "rows": rows,
    }
    return results, figure


def prepare_model(
    plugin: FewShotPlugin, cfg: FewShotConfig, fold: int, shots: int, device: torch.device, prior_path: str | None = None,
    novel: list[int] | None = None, warnings: list[str] | None = None,
) -> tuple[torch.nn.Module, str]:  # fmt: skip
    """The model that scores ``fold``'s ``shots``-shot episodes, with its fitted weights. With
    ``novel``, a model fitted on another class split is refused (``eval.allow_split_mismatch``:
    scored, and the mismatch appended to ``warnings``)."""
    torch.manual_seed(cfg.seed)
    model = build(plugin, cfg, prior_path)
    weights = "none (training-free)"
    if getattr(plugin, "trainable", False):
        path = weights_for(cfg, fold, shots)
        if path.is_file():
            payload = load_model_file(path, plugin, fold, shots)
            if novel is not None:
                mismatch = check_split(payload, path, cfg.data.benchmark, novel, cfg.eval.allow_split_mismatch)
                if mismatch and warnings is not None:
                    warnings.append(mismatch)
            load_trainable_state(model, payload["state"], str(path))
            weights = str(path)
        elif cfg.eval.allow_untrained:
            weights = "untrained (eval.allow_untrained=true)"
        else:
            raise ConfigError(
                f"eval: no trained weights for plugin {plugin.name!r} fold {fold} {shots}-shot at {path}; "
                f"run `glocon fewshot fit --plugin {plugin.name} ...` first (fit.shots lists the shot counts it trains), "
                "set eval.weights, or eval.allow_untrained=true"
            )
    return model.to(device), weights


def _summarise(per_seed: dict[int, dict[str, Any]], reps: int, seed: int) -> dict[str, Any]:
    """One fold and shot over its seeds: the mean and std over seeds, a bootstrap CI, the first seed's detail."""
    first = per_seed[min(per_seed)]
    tables = [[stats.EpisodeTable.from_rows(r["classes"], r["rows"]) for r in per_seed.values()]]
    mious = [r["miou"] for r in per_seed.values()]
    out = {k: v for k, v in first.items() if k not in ("rows", "classes")}
    out.update(
        miou=_mean(mious), fb_iou=_mean([r["fb_iou"] for r in per_seed.values()]),
        miou_std=float(torch.tensor(mious).std().item()) if len(mious) > 1 else 0.0,
        episodes=sum(r["episodes"] for r in per_seed.values()), episodes_per_seed=first["episodes"], seeds=sorted(per_seed),
        seed_miou={str(s): r["miou"] for s, r in per_seed.items()}, seed_fb_iou={str(s): r["fb_iou"] for s, r in per_seed.items()},
    )  # fmt: skip
    if reps:
        out["miou_ci"] = list(stats.interval(stats.mean_over_groups(tables, reps, seed)[1]))
    return out


def evaluate(plugin: FewShotPlugin, cfg: FewShotConfig | Mapping[str, Any], source: EpisodeSource | None = None) -> dict[str, Any]:
    """1-shot and 5-shot episodes on the novel classes of every fold; writes results.{json,md},
    the per-episode counts and fig5-fold<f>-<k>shot.png to ``eval.out_dir``. Returns the results."""
    if isinstance(cfg, Mapping):
        cfg = FewShotConfig.model_validate(cfg)
    from glocon.preflight import check_fewshot

    cfg = resolve_paths(cfg)
    if source is None:
        check_fewshot(cfg, "eval")
    device = resolve_device(cfg)
    src = CachedSource(open_source(cfg, source, "eval"))
    if source is None and cfg.eval.shards:
        check_split_separation(open_source(cfg, None, "fit"), src)
    out_dir = Path(cfg.eval.out_dir)
    save_resolved(cfg, out_dir)
    folds, seeds = folds_of(cfg), cfg.eval_seeds
    results: dict[str, Any] = {
        "plugin": plugin.name, "model": cfg.model, "prior": cfg.prior, "benchmark": cfg.data.benchmark, "shots": list(cfg.eval.shots),
        "seed": cfg.seed, "seeds": seeds, "image_size": cfg.image_size, "episodes_per_fold": cfg.eval.episodes, "eval_split": eval_split(cfg),
        "class_names": class_names(src), "folds": {}, "episode_files": {}, "weights": {},
        "warnings": [],  # e.g. a model scored on another class split than its fit's (eval.allow_split_mismatch)
    }  # fmt: skip
    plans = []
    for fold in folds:
        base, novel = fold_split(cfg, fold, src.class_index)
        for k in cfg.eval.shots:
            for s in seeds:
                es, path, reused = episodes_for(
                    src, cfg.episodes_dir, benchmark=cfg.data.benchmark, fold=fold, mode="test", shots=k,
                    n_episodes=cfg.eval.episodes, seed=s, base=base, novel=novel,
                )  # fmt: skip
                plans.append((fold, k, s, es, path, reused))
    counts: dict[str, Any] = {}
    store = open_store(cfg.store)
    store_before = StoreStats(**vars(store.stats)) if store is not None else None
    features = EncodedEval(store) if cfg.eval.encode_once else None
    t0 = time.perf_counter()
    with Dashboard(f"fewshot eval {plugin.name}", total=sum(len(p[3].episodes) for p in plans), unit="episodes") as dash:
        for fold in folds:
            results["folds"][str(fold)], results["weights"][str(fold)] = {}, {}
            for k in cfg.eval.shots:
                model, weights = prepare_model(plugin, cfg, fold, k, device, novel=fold_split(cfg, fold, src.class_index)[1], warnings=results["warnings"])
                results["weights"][str(fold)][str(k)] = weights
                shared = features if features is not None and features.applies(model) else None
                if shared is not None:
                    shared.bind(model)  # the shot models of a fold share F: their images are encoded once
                per_seed: dict[int, dict[str, Any]] = {}
                for f, kk, s, es, path, reused in plans:
                    if (f, kk) != (fold, k):
                        continue
                    dash.log(f"fold {fold} {k}-shot seed {s}: {len(es.episodes)} episodes over {len(es.classes)} classes ({'reused' if reused else 'drew'} {path})")
                    torch.manual_seed(cfg.seed)
                    r, fig_rows = evaluate_episodes(
                        model, src, es, image_size=cfg.image_size, batch_size=cfg.eval.batch_size, device=device,
                        n_figure=cfg.eval.n_figure_episodes if s == seeds[0] else 0, dash=dash, features=shared,
                    )  # fmt: skip
                    r["skipped_classes"], r["classes"] = es.extra.get("skipped_classes", []), es.classes
                    per_seed[s] = r
                    counts[f"fold{fold}-{k}shot-seed{s}"] = {"classes": es.classes, "rows": r["rows"], "episode_file": str(path), "sha256": sha256_file(path)}
                    results["episode_files"][f"fold{fold}-{k}shot-seed{s}"] = {"path": str(path), "sha256": sha256_file(path)}
                    if fig_rows:
                        png = figure_png(fig_rows, f"{plugin.name} - {cfg.data.benchmark} fold {fold}, {k}-shot")
                        atomic_write_bytes(out_dir / f"fig5-fold{fold}-{k}shot.png", png)
                    dash.log(f"fold {fold} {k}-shot seed {s}: mIoU {100 * r['miou']:.2f}  FB-IoU {100 * r['fb_iou']:.2f}")
                results["folds"][str(fold)][str(k)] = _summarise(per_seed, cfg.eval.bootstrap, cfg.seed)
    elapsed = time.perf_counter() - t0
    results["mean"] = fold_means(results, counts, cfg.eval.bootstrap, cfg.seed)
    results["timing"] = {
        "seconds": elapsed, "episodes_per_s": len(plans) and sum(len(p[3].episodes) for p in plans) / max(elapsed, 1e-9), "device": str(device),
        "encoded_images": features.encoded_images if features is not None else None,
        "store": store_delta(store, store_before),
    }  # fmt: skip
    atomic_write_json(out_dir / COUNTS, counts)
    atomic_write_json(out_dir / "results.json", results)
    atomic_write_text(out_dir / "results.md", results_markdown(results))
    return results


def tables_of(results: Mapping[str, Any], counts: Mapping[str, Any], shots: int) -> list[list[stats.EpisodeTable]]:
    """groups[fold][seed] of one shot count, from the per-episode counts."""
    return [
        [stats.EpisodeTable.from_rows(counts[f"fold{f}-{shots}shot-seed{s}"]["classes"], counts[f"fold{f}-{shots}shot-seed{s}"]["rows"]) for s in results["seeds"]]
        for f in results["folds"]
    ]


def fold_means(results: Mapping[str, Any], counts: Mapping[str, Any], reps: int, seed: int) -> dict[str, Any]:
    """Per shot: the mean over folds of mIoU and FB-IoU, the std of the per-seed fold means, and the bootstrap CI."""
    out = {}
    for k in results["shots"]:
        per_fold = [results["folds"][f][str(k)] for f in results["folds"]]
        seed_means = [_mean([r["seed_miou"][str(s)] for r in per_fold]) for s in results["seeds"]]
        m: dict[str, float | list[float]] = {"miou": _mean([r["miou"] for r in per_fold]), "fb_iou": _mean([r["fb_iou"] for r in per_fold])}
        m["miou_std"] = float(torch.tensor(seed_means).std().item()) if len(seed_means) > 1 else 0.0
        if reps:
            m["miou_ci"] = list(stats.interval(stats.mean_over_groups(tables_of(results, counts, k), reps, seed)[1]))
        out[str(k)] = m
    return out


def _load_eval(d: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    d = Path(d)
    if not (d / "results.json").is_file() or not (d / COUNTS).is_file():
        raise ConfigError(f"compare: {d} holds no evaluation (expected results.json and {COUNTS}; run `glocon fewshot eval`)")
    return json.loads((d / "results.json").read_text()), json.loads((d / COUNTS).read_text())


def _same_episodes(loaded: list[tuple[Path, dict[str, Any]]]) -> None:
    """Every evaluation scored the same episode files (names and sha256), or a ConfigError naming two."""
    (d0, c0), *rest = loaded
    for d, c in rest:
        mismatch = [g for g in sorted(set(c0) & set(c)) if c0[g]["sha256"] != c[g]["sha256"]]
        if set(c0) != set(c) or mismatch:
            raise ConfigError(f"compare: {d0} and {d} were not scored on the same episode files ({mismatch[:2] or sorted(set(c0) ^ set(c))[:2]})")


def _as_dirs(x: str | Path | Sequence[str | Path]) -> list[Path]:
    return [Path(x)] if isinstance(x, (str, Path)) else [Path(d) for d in x]


def compare(a_dir: str | Path | Sequence[str | Path], b_dir: str | Path | Sequence[str | Path], reps: int = 2000, seed: int = 0) -> dict[str, Any]:
    """mIoU of result A minus result B on the same episodes, per shot (4-fold mean), paired bootstrap.

    A (and B) may be several evaluations of one recipe fitted with different training seeds
    (``fit.seed``): the difference is then the mean over fits, fit i of A paired with fit i of B (or
    with B's one evaluation when B is training-free), and the interval also resamples the fits
    (``stats.paired_difference_over_fits``)."""
    a_dirs, b_dirs = _as_dirs(a_dir), _as_dirs(b_dir)
    la, lb = [_load_eval(d) for d in a_dirs], [_load_eval(d) for d in b_dirs]
    _same_episodes([(d, c) for d, (_, c) in zip([*a_dirs, *b_dirs], [*la, *lb])])
    ra = la[0][0]
    out: dict[str, Any] = {"a": str(a_dir) if len(a_dirs) == 1 else [str(d) for d in a_dirs], "b": str(b_dir) if len(b_dirs) == 1 else [str(d) for d in b_dirs], "shots": {}}
    for k in ra["shots"]:
        ta, tb = [tables_of(r, c, k) for r, c in la], [tables_of(r, c, k) for r, c in lb]
        out["shots"][str(k)] = stats.paired_difference_over_fits(ta, tb, reps, seed)
        out["shots"][str(k)].update(a_miou=_mean([r["mean"][str(k)]["miou"] for r, _ in la]), b_miou=_mean([r["mean"][str(k)]["miou"] for r, _ in lb]))
    return out


def over_fits(dirs: Sequence[str | Path], reps: int = 2000, seed: int = 0) -> dict[str, Any]:
    """One recipe's evaluations, one per training seed, on the same episodes -> per shot: the mean
    over fits of mIoU and FB-IoU, each fit's mIoU, their std, and a two-level bootstrap CI."""
    loaded = [_load_eval(d) for d in dirs]
    _same_episodes([(Path(d), c) for d, (_, c) in zip(dirs, loaded)])
    out: dict[str, Any] = {}
    for k in loaded[0][0]["shots"]:
        per_fit = [r["mean"][str(k)]["miou"] for r, _ in loaded]
        point, boot = stats.mean_over_fits([tables_of(r, c, k) for r, c in loaded], reps, seed)
        out[str(k)] = {
            "miou": point, "fb_iou": _mean([r["mean"][str(k)]["fb_iou"] for r, _ in loaded]), "per_fit": per_fit,
            "fit_std": float(np.std(per_fit, ddof=1)) if len(per_fit) > 1 else 0.0, "miou_ci": list(stats.interval(boot)) if reps else None,
        }  # fmt: skip
    return out
