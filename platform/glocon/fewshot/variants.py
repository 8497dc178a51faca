"""Rows of a controlled comparison: each plugin names its own row and its controls.

A plugin's ``variants`` maps a row name to the model overrides and the prior that row reads
(``"pretrained"``, ``"untrained"``: the same architecture at random init, or ``None``). QGNet's
are itself, the prior map off, and an untrained prior; proto's are the prototype on F's ImageNet
features and on the prior's. The demo and ``bench/fewshot_table.py`` build their rows here, so the
platform names no plugin's keys, and every row reads the same episode files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

from glocon.config import load_config
from glocon.fewshot.config import FewShotConfig

if TYPE_CHECKING:  # annotations only
    from glocon.fewshot.episodes import EpisodeSource
    from glocon.plugins import Plugin


class Variant(NamedTuple):
    plugin: str
    overrides: tuple[str, ...] = ()
    prior: str | None = "pretrained"  # which prior the row reads: "pretrained", "untrained", "imagenet" or None
    tune: bool = False  # settings chosen on base-val first (glocon.fewshot.choose)


def variants(plugins: list[str] | tuple[str, ...]) -> dict[str, Variant]:
    """Every row of ``plugins``, in order: each plugin's own row first, then its controls."""
    from glocon.plugins import load_plugin

    rows: dict[str, Variant] = {}
    for name in plugins:
        declared = load_plugin(name).variants or {name: ((), "pretrained")}
        for row, (overrides, prior, *tune) in declared.items():
            rows[row] = Variant(name, tuple(overrides), prior, bool(tune and tune[0]))
    return rows


def comparisons(rows: dict[str, Variant]) -> list[tuple[str, str]]:
    """The paired differences a table reports: the first row against each of its plugin's controls,
    then against every row of the other plugins (QGNet vs no prior map, vs untrained prior, vs
    proto as declared and as tuned on base-val)."""
    if not rows:
        return []
    first, head = next(iter(rows)), next(iter(rows.values())).plugin
    own = [(first, r) for r, v in rows.items() if r != first and v.plugin == head]
    return own + [(first, r) for r, v in rows.items() if v.plugin != head]


def resolve_row(plugin: Plugin, cfg: FewShotConfig, variant: Variant, source: EpisodeSource | None = None) -> tuple[FewShotConfig, dict[str, Any] | None]:
    """A row's final config: a tuned row first chooses its settings on base-val (never novel
    classes); returns the config and that choice (None for other rows)."""
    if not variant.tune:
        return cfg, None
    from glocon.fewshot.choose import choose_on_base_val, with_overrides

    choice = choose_on_base_val(plugin, cfg, source)
    return with_overrides(cfg, choice["chosen"]), choice


def variant_config(
    config: str | Path, row: str, variant: Variant, *, priors: dict[str, str], fit_shards: str | Path, eval_shards: str | Path | None,
    folds: list[int], episodes_dir: str | Path, storage: str | Path, eval_root: str | Path, extra: Sequence[str] = (),
) -> FewShotConfig:  # fmt: skip
    """The few-shot config of one row. The YAML's ``model`` section belongs to the plugin its
    ``plugin`` key names; any other plugin's row starts from an empty one."""
    own = load_config(FewShotConfig, config).plugin
    base = [
        f"plugin={variant.plugin}",
        f"prior={priors[variant.prior]}" if variant.prior else "prior=null",
        f"data.shards={fit_shards}",
        f"data.folds={json.dumps(list(folds))}",
        f"episodes_dir={episodes_dir}",
        f"fit.storage_path={storage}",
        f"fit.name={row}",
        f"eval.out_dir={Path(eval_root) / row}",
    ]
    if eval_shards is not None:
        base.append(f"eval.shards={eval_shards}")
    if own != variant.plugin:
        base.append("model={}")
    return load_config(FewShotConfig, config, [*base, *extra, *variant.overrides])
