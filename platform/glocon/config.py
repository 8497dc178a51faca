"""Typed configs: YAML file + dotted ``key=value`` overrides -> a validated pydantic model.

Errors name the key: an unknown key lists the nearest valid keys, a wrong type names the
field, the expected type and the value given, and a missing file names its path. The
resolved config is saved next to every output a job writes (``save_resolved``).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from glocon.errors import ConfigError
from glocon.io import atomic_write_text

RESOLVED_NAME = "config.resolved.yaml"


class GloconModel(BaseModel):
    """Base of every config model: unknown keys are errors, assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


M = TypeVar("M", bound=GloconModel)


def _read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p} (expected a YAML file)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (['a','b','c'], value), the value parsed as YAML (so 3 is an int)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. train.epochs=3")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: the key {key!r} is not a dotted name")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _set_path(data: dict[str, Any], parts: list[str], value: Any) -> None:
    node = data
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        elif not isinstance(nxt, dict):
            raise ConfigError(f"override {'.'.join(parts)}: {'.'.join(parts[: i + 1])} is a value, not a section")
        node = nxt
    node[parts[-1]] = value


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The nested model class that owns the field at ``loc`` (for unknown-key suggestions)."""
    cur: Any = model
    for part in loc:
        if not (isinstance(cur, type) and issubclass(cur, BaseModel)):
            return None
        field = cur.model_fields.get(str(part))
        if field is None:
            return None
        cur = field.annotation
        # Optional[Sub] / Sub | None
        args = getattr(cur, "__args__", None)
        if args:
            subs = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            cur = subs[0] if subs else cur
    return cur if isinstance(cur, type) and issubclass(cur, BaseModel) else None


def all_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key a model accepts (nested models expanded)."""
    keys: list[str] = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        sub = _model_at(model, (name,))
        if sub is not None:
            keys.extend(all_keys(sub, dotted + "."))
    return keys


def _format_errors(model: type[BaseModel], exc: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for err in exc.errors():
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            owner = _model_at(model, loc[:-1])
            valid = list(owner.model_fields) if owner else []
            near = difflib.get_close_matches(str(loc[-1]), valid, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr('.'.join([*map(str, loc[:-1]), n])) for n in near)}?" if near else ""
            lines.append(f"  unknown key {dotted!r}{hint} (valid keys here: {', '.join(valid)})")
        else:
            lines.append(f"  field {dotted!r}: {err['msg']} (expected {err['type']}, got {err.get('input')!r})")
    return "\n".join(lines)


def load_config(model: type[M], path: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> M:
    """Read ``path`` (optional), apply dotted overrides, validate against ``model``."""
    data: dict[str, Any] = _read_yaml(path) if path is not None else {}
    _apply(data, overrides)
    source = str(path) if path is not None else "<defaults>"
    return validate_config(model, data, source)


def apply_overrides(cfg: M, overrides: Iterable[str], source: str = "overrides") -> M:
    """A copy of ``cfg`` with dotted ``key=value`` overrides applied, validated again."""
    data = cfg.model_dump(mode="json")
    _apply(data, overrides)
    return validate_config(type(cfg), data, source)


def _apply(data: dict[str, Any], overrides: Iterable[str]) -> None:
    for text in overrides:
        parts, value = parse_override(text)
        _set_path(data, parts, value)


def validate_config(model: type[M], data: dict[str, Any], source: str = "<dict>") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(model, exc, source)) from None


def to_yaml(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def save_resolved(cfg: BaseModel, out_dir: str | os.PathLike, name: str = RESOLVED_NAME) -> Path:
    """Write the resolved config next to a job's outputs (atomically)."""
    return atomic_write_text(Path(out_dir) / name, to_yaml(cfg))


def split_cli(argv: list[str]) -> tuple[str | None, list[str]]:
    """Tiny helper for jobs: ``--config X.yaml k=v ...`` -> (path, overrides)."""
    path: str | None = None
    overrides: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "--config":
            path = next(it, None)
            if path is None:
                raise ConfigError("--config needs a path to a YAML file")
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        elif "=" in arg and not arg.startswith("-"):
            overrides.append(arg)
        else:
            raise ConfigError(f"unexpected argument {arg!r}: expected --config FILE and key=value overrides")
    return path, overrides
