"""Where a few-shot run reads from: the fit and eval shard sets, the fold's class split, the
device, the prior and the plugin's model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Mapping

import torch

from glocon.errors import ConfigError
from glocon.fewshot.config import FewShotConfig

if TYPE_CHECKING:  # annotations only
    from glocon.fewshot.episodes import EpisodeSource
    from glocon.fewshot.plugin_protocol import FewShotPlugin
    from glocon.models.prior import PriorExtractor


def _spec_list(shards: str | list[str] | None) -> list[str]:
    return [] if shards is None else [shards] if isinstance(shards, str) else list(shards)


def open_source(cfg: FewShotConfig, source: EpisodeSource | None = None, split: Literal["fit", "eval"] = "fit") -> EpisodeSource:
    """The episode source of a split: ``source`` if given (tests, custom readers), else the shard
    index of ``data.shards`` (fit) or ``eval.shards`` (eval; ``data.shards`` when unset)."""
    if source is not None:
        return source
    paths = _spec_list(cfg.eval.shards) if split == "eval" else []
    paths = paths or _spec_list(cfg.data.shards)
    if not paths:
        raise ConfigError("data.shards: a shard folder or manifest.json is needed (make it with `glocon shards`)")
    from glocon.data.shardindex import ShardIndex
    from glocon.fewshot.batches import ShardEpisodeSource

    return ShardEpisodeSource(*(ShardIndex(p) for p in paths))


def eval_split(cfg: FewShotConfig) -> str:
    """How the eval images relate to the fit images, for the results: 'held out' or a warning."""
    return "held out (eval.shards)" if cfg.eval.shards else "the fit shards (eval.shards not set: no benchmark evaluates this way)"


def check_split_separation(fit_source: EpisodeSource, eval_source: EpisodeSource) -> None:
    """No eval image may be a fit image: a query the model was trained on would flatter it."""
    fit_keys = {k for ks in fit_source.class_index.values() for k in ks}
    eval_keys = {k for ks in eval_source.class_index.values() for k in ks}
    shared = fit_keys & eval_keys
    if shared:
        raise ConfigError(f"eval.shards and data.shards share {len(shared)} images (e.g. {sorted(shared)[:3]}); the eval split must be held out")


def resolve_paths(cfg: FewShotConfig) -> FewShotConfig:
    """A copy with every path absolute and outliving a Ray job (``glocon.paths.resolve``): Ray
    workers run in another working directory, and a submitted job's own copy of the code is deleted."""
    from glocon.paths import resolve

    data = cfg.model_dump(mode="json")
    for name, section in (("data", data["data"]), ("eval", data["eval"])):
        shards = section["shards"]
        if shards is not None:
            section["shards"] = resolve(shards, f"{name}.shards") if isinstance(shards, str) else [resolve(p, f"{name}.shards[{i}]") for i, p in enumerate(shards)]
    data["data"]["fss_split_dir"] = resolve(data["data"]["fss_split_dir"], "data.fss_split_dir")
    data["prior"] = resolve(data["prior"], "prior")
    data["episodes_dir"] = resolve(data["episodes_dir"], "episodes_dir")
    data["fit"]["storage_path"] = resolve(data["fit"]["storage_path"], "fit.storage_path")
    data["fit"]["cache"]["dir"] = resolve(data["fit"]["cache"]["dir"], "fit.cache.dir")
    data["eval"]["out_dir"] = resolve(data["eval"]["out_dir"], "eval.out_dir")
    data["eval"]["weights"] = resolve(data["eval"]["weights"], "eval.weights")
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


def load_prior(path: str | None) -> PriorExtractor | None:
    if not path:
        return None
    from glocon.models.prior import load_prior_extractor

    return load_prior_extractor(path)


def build(plugin: FewShotPlugin, cfg: FewShotConfig, prior_path: str | None = None) -> torch.nn.Module:
    """plugin.build_model(validated model config, loaded prior or None)."""
    model_cfg = plugin.make_config(cfg.model, f"model ({plugin.name})")
    return plugin.build_model(model_cfg, load_prior(prior_path if prior_path is not None else cfg.prior))


def class_names(source: EpisodeSource) -> dict[str, str]:
    names = getattr(source, "class_names", None)
    if callable(names):
        names = names()
    return {str(k): str(v) for k, v in (names or {}).items()}
