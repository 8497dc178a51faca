"""What a sweep's trials are scored by, resolved in the driver before any trial: the few-shot
plugin's config (validated, paths absolute) and its episode file, or the dense probe's settings."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from glocon.config import to_yaml, validate_config
from glocon.paths import resolve
from glocon.tune.space import SweepConfig, get_dotted

if TYPE_CHECKING:  # annotations only
    from glocon.fewshot.config import FewShotConfig


def trial_path(path: str | None, key: str = "path") -> str | None:
    """Trials run in their own working directories: every input path must be absolute, and
    outlive a Ray job (``glocon.paths.resolve``: against $GLOCON_SUBMIT_DIR, or refused)."""
    return resolve(path, key)


def objective_name(cfg: SweepConfig) -> str:
    return "probe retrieval mIoU" if cfg.objective.kind == "probe" else cfg.objective.plugin


def objective_config(cfg: SweepConfig, exp_dir: Path) -> FewShotConfig:
    """The few-shot config the objective runs with (validated; paths absolute; episodes kept
    in the sweep folder unless the config names a folder of its own)."""
    from glocon.config import load_config
    from glocon.fewshot.runner import FewShotConfig

    src = cfg.objective.config
    if isinstance(src, str):
        fcfg = load_config(FewShotConfig, src, cfg.objective.overrides)
    else:
        fcfg = load_config(FewShotConfig, None, [])
        fcfg = validate_config(FewShotConfig, _merge(fcfg.model_dump(mode="json"), src), "objective.config")
        if cfg.objective.overrides:
            import tempfile

            with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
                fh.write(to_yaml(fcfg))
            fcfg = load_config(FewShotConfig, fh.name, cfg.objective.overrides)
            Path(fh.name).unlink()
    data = fcfg.model_dump(mode="json")
    shards = data["data"]["shards"]
    key = "objective.config.data.shards"
    data["data"]["shards"] = trial_path(shards, key) if not isinstance(shards, list) else [trial_path(p, f"{key}[{i}]") for i, p in enumerate(shards)]
    data["data"]["fss_split_dir"] = trial_path(data["data"]["fss_split_dir"], "objective.config.data.fss_split_dir")
    data["prior"] = None  # the prior is the trial's, never one named in the config
    if data["episodes_dir"] == FewShotConfig().episodes_dir:
        data["episodes_dir"] = str(exp_dir / "episodes")
    data["episodes_dir"] = trial_path(data["episodes_dir"], "objective.config.episodes_dir")
    if cfg.objective.plugin and not data.get("plugin"):
        data["plugin"] = cfg.objective.plugin
    return validate_config(FewShotConfig, data, "objective.config (resolved)")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def draw_objective_episodes(plugin_cfg: FewShotConfig) -> Path:
    """Draw (or reuse, validated) the objective's episode file once, in the driver, before any
    trial: every trial then scores the same episodes, and the file is there to audit. Same
    calls as ``glocon.fewshot.runner.objective``: validation mode, base classes of the fold."""
    from glocon.fewshot.batches import CachedSource
    from glocon.fewshot.episodes import episodes_for
    from glocon.fewshot.runner import fold_split, folds_of, open_source

    src = CachedSource(open_source(plugin_cfg))
    fold = plugin_cfg.objective.fold if plugin_cfg.objective.fold is not None else folds_of(plugin_cfg)[0]
    base, novel = fold_split(plugin_cfg, fold, src.class_index)
    _, path, _ = episodes_for(
        src, plugin_cfg.episodes_dir, benchmark=plugin_cfg.data.benchmark, fold=fold, mode="val",
        shots=plugin_cfg.objective.shots, n_episodes=plugin_cfg.objective.episodes, seed=plugin_cfg.seed,
        base=base, novel=novel,
    )  # fmt: skip
    return path


def probe_objective(cfg: SweepConfig, base: dict[str, Any]) -> dict[str, Any]:
    """The probe objective's settings with absolute paths (trials run in other working directories)."""
    p = cfg.objective.probe.model_dump(mode="json")
    p["train_shards"] = trial_path(p["train_shards"] or str(get_dotted(base, "data.shards")), "objective.probe.train_shards")
    p["val_shards"] = trial_path(p["val_shards"], "objective.probe.val_shards") if p["val_shards"] else ""
    return p
