"""Evaluations: the Fig. 5 row (support + mask, query, prior and guided region maps, prediction,
ground truth) of any episode of the episode files an evaluation scored.

A row is computed, not looked up: the evaluation's own resolved config, plugin and weights are
loaded through ``glocon.fewshot.runner`` (the code ``evaluate`` runs), the one episode is scored by
``evaluate_episodes`` and drawn by ``figure_png``, so it is the row ``evaluate`` would have drawn
had that episode been among its first ``n_figure_episodes``. The episode file must still be the one
the results were scored on (its sha256 is in results.json).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glocon.config import RESOLVED_NAME, load_config
from glocon.device import pick_device
from glocon.errors import GloconError
from glocon.explore.folders import ExploreError, Folders
from glocon.io import sha256_file

if TYPE_CHECKING:  # annotations only
    from glocon.fewshot.episodefile import EpisodeSet

_PYPLOT = threading.Lock()  # matplotlib's pyplot state is global: one figure at a time
NOT_FILES = ("none", "untrained")  # results.json "weights" entries that name no file


def _weights_of(results: dict[str, Any], fold: int, shots: int) -> str:
    """The weights a (fold, shots) was scored with: results.json keeps one entry per fold and shot."""
    entry = results.get("weights", {}).get(str(fold), "")
    return str(entry.get(str(shots), "") if isinstance(entry, dict) else entry)


@dataclasses.dataclass
class EvalModel:
    model: Any
    source: Any
    cfg: Any
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


class Evals:
    def __init__(self, folders: Folders, device: str = "cpu", cache_rows: int = 64) -> None:
        self.folders = folders
        self.device = pick_device(device)
        self.capacity = cache_rows
        self._models: dict[tuple[str, int, int], EvalModel] = {}
        self._rows: OrderedDict[tuple[str, int, int, int], tuple[dict, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return list(self.folders.named["evals"])

    def results(self, name: str) -> dict[str, Any]:
        path = Path(self.folders.path("evals", name)) / "results.json"
        if not path.is_file():
            raise ExploreError(404, f"evaluation {name!r}: no results at {path} (run glocon fewshot eval with eval.out_dir={path.parent})")
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ExploreError(422, f"evaluation {name!r}: {path} is not valid JSON ({exc})") from None

    def episode_file(self, name: str, fold: int, shots: int) -> tuple[Path, str]:
        """(path, sha256 the results were scored on) of one (fold, shots) episode file."""
        files = self.results(name).get("episode_files", {})
        # one file per seed (fold<f>-<K>shot-seed<s>): the rows show the first seed's episodes
        seeded = sorted((k for k in files if k.startswith(f"fold{fold}-{shots}shot-seed")), key=lambda k: int(k.rsplit("seed", 1)[1]))
        entry = files.get(f"fold{fold}-{shots}shot") or (files[seeded[0]] if seeded else None)
        if entry is None:
            raise ExploreError(404, f"evaluation {name!r}: no episodes for fold {fold}, {shots}-shot (it has {', '.join(sorted(files)) or 'none'})")
        return Path(entry["path"]), entry["sha256"]

    def episodes(self, name: str, fold: int, shots: int) -> EpisodeSet:
        from glocon.fewshot.episodefile import load_episodes

        path, sha = self.episode_file(name, fold, shots)
        self.folders.require(path, f"evaluation {name!r}: episode file")
        if not path.is_file():
            raise ExploreError(404, f"evaluation {name!r}: episode file {path} is missing")
        if sha256_file(path) != sha:
            raise ExploreError(409, f"evaluation {name!r}: episode file {path} changed since the evaluation (sha256 differs from results.json); rerun the evaluation")
        try:
            return load_episodes(path)
        except GloconError as exc:
            raise ExploreError(422, f"evaluation {name!r}: {exc}") from None

    def peers(self, name: str, fold: int, shots: int) -> list[str]:
        """Evaluations (this one first) scored on the byte-identical episode file: rows that compare."""
        _, sha = self.episode_file(name, fold, shots)
        out = [name]
        for other in self.names():
            if other == name:
                continue
            try:
                if self.episode_file(other, fold, shots)[1] == sha:
                    out.append(other)
            except ExploreError:
                continue
        return out

    def _model(self, name: str, fold: int, shots: int) -> EvalModel:
        with self._lock:
            if (name, fold, shots) not in self._models:
                try:
                    self._models[(name, fold, shots)] = self._load(name, fold, shots)
                except ExploreError:
                    raise
                except GloconError as exc:
                    raise ExploreError(404, f"evaluation {name!r}: {exc}") from None
            return self._models[(name, fold, shots)]

    def _load(self, name: str, fold: int, shots: int) -> EvalModel:
        from glocon.fewshot import runner
        from glocon.fewshot.batches import CachedSource
        from glocon.plugins import load_plugin

        folder = Path(self.folders.path("evals", name))
        if not (folder / RESOLVED_NAME).is_file():
            raise ExploreError(404, f"evaluation {name!r}: {folder / RESOLVED_NAME} is missing (the config evaluate saves beside results.json)")
        cfg = load_config(runner.FewShotConfig, folder / RESOLVED_NAME)
        results = self.results(name)
        split = cfg.eval.shards or cfg.data.shards  # the episodes' images come from the eval split
        shards = [split] if isinstance(split, str) else list(split or [])
        for s in shards:
            self.folders.require(s, f"evaluation {name!r}: shards", kinds=("shards",))
        if cfg.prior:
            self.folders.require(cfg.prior, f"evaluation {name!r}: prior")
        weights = _weights_of(results, fold, shots)
        if weights and not weights.startswith(NOT_FILES):
            self.folders.require(weights, f"evaluation {name!r}: weights")
        plugin = load_plugin(results["plugin"])
        # prepare_model is evaluate's own: the same weights (the K-shot model), the same "untrained" rule, the same seed.
        model, _ = runner.prepare_model(plugin, cfg, fold, shots, self.device)
        return EvalModel(model, CachedSource(runner.open_source(cfg, None, "eval")), cfg)

    def row(self, name: str, fold: int, shots: int, index: int) -> tuple[dict[str, Any], bytes]:
        """(what the row shows, in numbers; its PNG). Cached: the page and its image ask twice."""
        key = (name, fold, shots, index)
        with self._lock:
            if key in self._rows:
                self._rows.move_to_end(key)
                return self._rows[key]
        info, png = self._compute_row(name, fold, shots, index)
        with self._lock:
            self._rows[key] = (info, png)
            while len(self._rows) > self.capacity:
                self._rows.popitem(last=False)
        return info, png

    def _compute_row(self, name: str, fold: int, shots: int, index: int) -> tuple[dict[str, Any], bytes]:
        import torch

        from glocon.fewshot.report import figure_png
        from glocon.fewshot.runner import evaluate_episodes

        es = self.episodes(name, fold, shots)
        if not 0 <= index < len(es.episodes):
            raise ExploreError(404, f"evaluation {name!r}: episode {index} out of range (fold {fold}, {shots}-shot has {len(es.episodes)} episodes)")
        episode = es.episodes[index]
        em = self._model(name, fold, shots)
        with em.lock:
            torch.manual_seed(em.cfg.seed)
            try:
                r, rows = evaluate_episodes(
                    em.model, em.source, dataclasses.replace(es, episodes=[episode]),
                    image_size=em.cfg.image_size, batch_size=1, device=self.device, n_figure=1,
                )  # fmt: skip
            except GloconError as exc:
                raise ExploreError(422, f"evaluation {name!r}, episode {index}: {exc}") from None
        results = self.results(name)
        with _PYPLOT:
            png = figure_png(rows, f"{name} ({results['plugin']}): fold {fold}, {shots}-shot, episode {index}")
        c = str(episode.cls)
        info = {
            "eval": name, "plugin": results["plugin"], "fold": fold, "shots": shots, "index": index,
            "class": episode.cls, "class_name": results.get("class_names", {}).get(c),
            "query": episode.query, "supports": list(episode.supports),
            "iou": r["mean_episode_iou"], "intersection": r["class_intersection"][c], "union": r["class_union"][c],
            "region_maps": sorted(r["region_maps"]), "weights": _weights_of(results, fold, shots),
        }
        return info, png

    def summary(self, name: str) -> dict[str, Any]:
        """What the index page says about an evaluation (its results.json only)."""
        try:
            results = self.results(name)
        except ExploreError as exc:
            return {"name": name, "error": str(exc)}
        folder = Path(self.folders.path("evals", name))
        return {
            "name": name, "plugin": results.get("plugin"), "benchmark": results.get("benchmark"),
            "mean": results.get("mean", {}), "shots": results.get("shots", []), "folds": list(results.get("folds", {})),
            "episode_files": sorted(results.get("episode_files", {})), "figures": sorted(p.name for p in folder.glob("fig5-*.png")),
            "has_markdown": (folder / "results.md").is_file(),
        }
