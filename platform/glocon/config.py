"""Typed configs: YAML file + dotted ``key=value`` overrides -> a validated pydantic model.

Errors name the key: an unknown key lists the nearest valid keys, a wrong type names the
field, the expected type and the value given, and a missing file names its path. The
resolved config is saved next to every output a job writes (``save_resolved``).

Every YAML glocon reads (configs, overrides, class-name files, sweep records) goes through
``load_yaml`` / ``read_yaml``: ``yaml.safe_load`` within bounds on bytes, nesting depth and the
size the document has once its aliases are expanded. A few hundred bytes of nested aliases (a
"billion laughs") load as shared objects in a blink, then expand to gigabytes wherever they are
dumped as JSON or printed, so the expanded size is measured on the event stream, before loading.
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


# Far beyond any real config or class list (ImageNet-21k's names are ~22k nodes and ~0.5 MB).
YAML_MAX_BYTES = 4 * 2**20
YAML_MAX_NODES = 200_000  # scalars and collections, aliases counted as often as they are used
YAML_MAX_CHARS = 16 * 2**20  # characters of all scalars, aliases expanded
YAML_MAX_DEPTH = 64


class YAMLBoundsError(yaml.YAMLError):
    """A YAML document beyond glocon's bounds (the message says which)."""


def _check_yaml_bounds(text: str) -> None:
    """Raise YAMLBoundsError when ``text`` is too big, too deep, or expands beyond the bounds.

    One pass over the parser's events (no objects built): each anchor's expanded size is known
    when its node closes, and an alias adds that size to every collection it sits in.
    """
    if len(text) > YAML_MAX_BYTES:
        raise YAMLBoundsError(f"{len(text)} characters, expected at most {YAML_MAX_BYTES}")
    open_nodes: list[list[Any]] = []  # per open collection: [nodes, chars, anchor]
    anchored: dict[str, tuple[int, int]] = {}  # anchor -> (nodes, chars) of its node, expanded
    total = [0, 0]
    for ev in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            if len(open_nodes) >= YAML_MAX_DEPTH:
                raise YAMLBoundsError(f"nested deeper than {YAML_MAX_DEPTH} levels (line {ev.start_mark.line + 1})")
            open_nodes.append([1, 0, ev.anchor])
            continue
        if isinstance(ev, yaml.ScalarEvent):
            nodes, chars, anchor = 1, len(ev.value), ev.anchor
        elif isinstance(ev, yaml.AliasEvent):
            if any(node[2] == ev.anchor for node in open_nodes):  # would expand forever
                raise YAMLBoundsError(f"alias *{ev.anchor} refers to a node that contains it (line {ev.start_mark.line + 1})")
            nodes, chars = anchored.get(ev.anchor, (1, 0))  # an undefined alias is the loader's error
            anchor = None
        elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            nodes, chars, anchor = open_nodes.pop()
        else:
            continue
        if anchor:
            anchored[anchor] = (nodes, chars)
        into = open_nodes[-1] if open_nodes else total
        into[0] += nodes
        into[1] += chars
        if into[0] > YAML_MAX_NODES or into[1] > YAML_MAX_CHARS:
            raise YAMLBoundsError(
                f"its aliases expand to more than {YAML_MAX_NODES} nodes or {YAML_MAX_CHARS} characters "
                f"(a 'billion laughs' document? line {ev.start_mark.line + 1})"
            )


def _one_line(exc: yaml.YAMLError) -> str:
    return " ".join(str(exc).split())


def load_yaml(text: str, source: str, error: type[Exception] = ConfigError) -> Any:
    """``yaml.safe_load(text)`` within glocon's bounds; errors are ``error`` naming ``source``."""
    try:
        _check_yaml_bounds(text)
        return yaml.safe_load(text)
    except YAMLBoundsError as exc:
        raise error(f"{source}: refused to load this YAML: {exc}") from None
    except yaml.YAMLError as exc:
        raise error(f"{source} is not valid YAML: {_one_line(exc)}") from None


def read_yaml(path: str | os.PathLike, what: str, error: type[Exception] = ConfigError) -> Any:
    """The YAML file at ``path`` through ``load_yaml``; ``what`` names it in errors (``config file``)."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{what} not found: {p} (expected a YAML file)")
    size = p.stat().st_size
    if size > YAML_MAX_BYTES:  # refused before it is read into memory
        raise error(f"{what} {p}: refused to load this YAML: {size} bytes, expected at most {YAML_MAX_BYTES}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return load_yaml(text, f"{what} {p}", error)


def _read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    data = read_yaml(p, "config file")
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
        if raw.strip() == "":
            value: Any = ""
        else:
            _check_yaml_bounds(raw)
            value = yaml.safe_load(raw)
    except YAMLBoundsError as exc:
        raise ConfigError(f"override {key}: refused to load its value as YAML: {exc}") from None
    except yaml.YAMLError:  # not YAML: the text itself is the value
        value = raw
    return key.split("."), value


def _set_path(data: dict[str, Any], parts: list[str], value: object) -> None:
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
    """One line per problem; a single problem stays on the first line, so a job's one ``error:``
    line names the key (several follow it, indented)."""
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            owner = _model_at(model, loc[:-1])
            valid = list(owner.model_fields) if owner else []
            near = difflib.get_close_matches(str(loc[-1]), valid, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr('.'.join([*map(str, loc[:-1]), n])) for n in near)}?" if near else ""
            problems.append(f"unknown key {dotted!r}{hint} (valid keys here: {', '.join(valid)})")
        else:
            problems.append(f"field {dotted!r}: {err['msg']} (expected {err['type']}, got {err.get('input')!r})")
    if len(problems) == 1:
        return f"invalid config ({source}): {problems[0]}"
    return "\n".join([f"invalid config ({source}): {len(problems)} problems:", *(f"  {p}" for p in problems)])


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
