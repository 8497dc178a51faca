"""``objective``: the cheap score a sweep maximises, mIoU (%) on seeded *validation* episodes of
the fold's BASE classes, drawn from the fit split's images that hold no novel class of the fold.
It never touches the eval split or a novel class."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import torch

from glocon.fewshot.batches import CachedSource, TrainEpisodes
from glocon.fewshot.config import FewShotConfig
from glocon.featstore import open_store
from glocon.fewshot.encoded import EncodedEval
from glocon.fewshot.episodes import episodes_for
from glocon.fewshot.evaluate import evaluate_episodes
from glocon.fewshot.fit import make_optimizer, train_sampler, train_steps, worker_indices
from glocon.fewshot.sources import build, fold_split, folds_of, open_source, resolve_device
from glocon.fewshot.state import as_segmenter

if TYPE_CHECKING:  # annotations only
    from glocon.fewshot.episodes import EpisodeSource
    from glocon.fewshot.plugin_protocol import FewShotPlugin


def objective(
    plugin: FewShotPlugin, prior_path: str | None, cfg: FewShotConfig | Mapping[str, Any], source: EpisodeSource | None = None, features: EncodedEval | None = None,
) -> float:  # fmt: skip
    """mIoU (%) on the validation episodes (``<episodes_dir>/<benchmark>-fold<f>-val-...json``) with
    the prior at ``prior_path``. A trainable plugin first trains ``objective.fit_steps`` steps on
    base-class training episodes, in this process (a Tune trial is already a Ray task).
    ``features`` carries encoded images from one call to the next (choices that differ only in
    the head, ``glocon.fewshot.choose``); by default each call encodes each image once."""
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
    torch.manual_seed(cfg.fit_seed)
    model = build(plugin, cfg, prior_path).to(device)
    if getattr(plugin, "trainable", False) and cfg.objective.fit_steps > 0:
        sampler = train_sampler(cfg, src, fold, cfg.objective.shots)
        steps = cfg.objective.fit_steps
        optimizer, scheduler = make_optimizer(model, cfg, steps)
        dataset = TrainEpisodes(src, sampler, cfg.image_size, cfg.fit_seed, worker_indices(0, steps, cfg.fit.batch_size, 0, cfg.fit.batch_size), cfg.fit.scale)
        train_steps(model, as_segmenter(model).loss, optimizer, scheduler, dataset, batch_size=cfg.fit.batch_size, start_step=0, device=device)
    if features is None and cfg.eval.encode_once:
        features = EncodedEval(open_store(cfg.store))
    if features is not None and features.applies(model):
        features.bind(model)
    else:
        features = None
    torch.manual_seed(cfg.seed)
    r, _ = evaluate_episodes(model, src, es, image_size=cfg.image_size, batch_size=cfg.eval.batch_size, device=device, features=features)
    miou: float = r["miou"]
    return 100.0 * miou
