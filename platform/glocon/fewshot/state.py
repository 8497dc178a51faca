"""What a fit leaves on disk: its run folders, checkpoints of the trainable state, and the
``model.pt`` evaluation loads. One model per (fold, shots): ``<storage>/<name>-fold<f>-<K>shot/``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, cast

import torch

from glocon.errors import CheckpointError
from glocon.fewshot.config import FewShotConfig

if TYPE_CHECKING:  # annotations only
    from ray.train import Result

    from glocon.fewshot.plugin_protocol import FewShotPlugin
    from glocon.segmenter import Segmenter

MODEL_FORMAT = "glocon.fewshot_model/v1"
STATE_FORMAT = "glocon.fewshot_state/v1"
FIT_STATE_KEYS = ("model", "optimizer", "scheduler", "step", "fold")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def as_segmenter(model: torch.nn.Module) -> Segmenter:
    """``model`` as the ``Segmenter`` it is (nothing is checked or changed): ``Plugin.build_model``
    returns one typed as ``nn.Module``, whose ``__getattr__`` hides ``loss`` and the rest."""
    return cast("Segmenter", model)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The part of the state a fit changes: every trainable parameter, plus the buffers (BatchNorm
    statistics) of the modules that own one. Frozen backbones and the prior stay out."""
    model = unwrap(model)
    ids = {id(p) for p in as_segmenter(model).trainable_parameters()}
    owners: set[str] = set()
    keep: set[str] = set()
    for name, p in model.named_parameters():
        if id(p) in ids:
            keep.add(name)
            owners.add(name.rsplit(".", 1)[0] if "." in name else "")
    for name, _ in model.named_buffers():
        if (name.rsplit(".", 1)[0] if "." in name else "") in owners:
            keep.add(name)
    keep |= set(getattr(model, "fit_buffers", lambda: [])())  # e.g. frozen BatchNorm statistics fit moved
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k in keep}


def load_trainable_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    own = unwrap(model).state_dict()
    unknown = [k for k in state if k not in own]
    if unknown:
        raise CheckpointError(f"{where}: {len(unknown)} tensors do not belong to this model, e.g. {unknown[:3]} (another plugin or model config?)")
    bad = [k for k, v in state.items() if tuple(own[k].shape) != tuple(v.shape)]
    if bad:
        raise CheckpointError(f"{where}: shape mismatch for {bad[:3]} (model config differs from the one trained)")
    unwrap(model).load_state_dict(dict(state), strict=False)


def run_name(cfg: FewShotConfig, fold: int, shots: int) -> str:
    return f"{cfg.fit.name}-fold{fold}-{shots}shot"


def run_dir(cfg: FewShotConfig, fold: int, shots: int) -> Path:
    return Path(cfg.fit.storage_path) / run_name(cfg, fold, shots)


def model_path(cfg: FewShotConfig, fold: int, shots: int) -> Path:
    return run_dir(cfg, fold, shots) / "model.pt"


def save_model_file(
    path: Path, plugin: FewShotPlugin, cfg: FewShotConfig, fold: int, shots: int, state: Mapping[str, torch.Tensor], info: Mapping[str, Any],
    split: Mapping[str, Any] | None = None,
) -> Path:  # fmt: skip
    """``split``: the data identity the model was fitted on ({"benchmark", "base", "novel"}), which
    evaluation checks (``check_split``)."""
    from glocon.train.checkpoint import save_tensors

    payload = {
        "format": MODEL_FORMAT, "plugin": plugin.name, "model": json.dumps(cfg.model, sort_keys=True), "fold": fold, "shots": shots,
        "state": dict(state), "info": json.dumps(dict(info), default=str), "split": json.dumps(dict(split or {}), sort_keys=True),
    }  # fmt: skip
    return save_tensors(path, payload)


def load_model_file(path: Path, plugin: FewShotPlugin, fold: int, shots: int | None = None) -> dict[str, Any]:
    from glocon.train.checkpoint import load_tensors

    payload = load_tensors(path)
    if payload.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{path}: expected format {MODEL_FORMAT!r}, got {payload.get('format')!r}")
    if payload.get("plugin") != plugin.name:
        raise CheckpointError(f"{path}: trained by plugin {payload.get('plugin')!r}, not {plugin.name!r}")
    if int(payload.get("fold", -1)) != fold:
        raise CheckpointError(f"{path}: trained for fold {payload.get('fold')}, evaluated on fold {fold}; novel classes would leak")
    return payload


def check_split(payload: Mapping[str, Any], path: Path, benchmark: str, novel: list[int], allow_mismatch: bool) -> str | None:
    """None when the model was fitted with this benchmark's fold and these novel classes (or
    records no split: a model.pt from before splits were recorded); else the mismatch, which is
    an error unless ``allow_mismatch`` (then the caller records it in the results)."""
    split = json.loads(payload.get("split") or "{}")
    if not split:
        return None
    fitted = (split.get("benchmark"), sorted(int(c) for c in split.get("novel", [])))
    if fitted == (benchmark, sorted(novel)):
        return None
    msg = (
        f"{path}: fitted with benchmark {fitted[0]!r} novel classes {fitted[1]}, evaluated with benchmark {benchmark!r} novel classes "
        f"{sorted(novel)}: the model has seen classes it would be scored on as novel"
    )
    if not allow_mismatch:
        raise CheckpointError(msg + " (eval.allow_split_mismatch=true scores it anyway and says so in the results)")
    return msg


def weights_for(cfg: FewShotConfig, fold: int, shots: int) -> Path:
    """The model.pt that scores ``shots``-shot episodes of ``fold``: that shot count's own model
    (PFENet trains one per shot), or the only one fit trained (HSNet's protocol: a 1-shot model
    scores 1- and 5-shot), or ``eval.weights`` (a file, or a folder of ``fold<f>-<K>shot/model.pt``)."""
    if cfg.eval.weights:
        p = Path(cfg.eval.weights)
        return p / f"fold{fold}-{shots}shot" / "model.pt" if p.is_dir() else p
    own = model_path(cfg, fold, shots)
    if own.is_file() or len(cfg.fit.shots) != 1:
        return own
    return model_path(cfg, fold, cfg.fit.shots[0])


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


def checkpoint_folder(result: Result, folder: Path) -> Path:
    """The run's latest checkpoint: Ray's result, else the newest checkpoint-step* folder (a
    rerun of a finished run trains nothing and reports nothing new)."""
    ckpt = getattr(result, "checkpoint", None)
    if ckpt is not None:
        return Path(ckpt.path) if os.path.isdir(ckpt.path) else Path(ckpt.to_directory())
    from glocon.train.checkpoint import checkpoint_order

    found = sorted(folder.glob("checkpoint-step*"), key=checkpoint_order)
    if not found:
        raise CheckpointError(f"fit: no checkpoint under {folder} (the run reported none)")
    return found[-1]
