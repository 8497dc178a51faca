"""The plugin protocol: downstream heads that glocon finds by entry point, never by import name.

A plugin is an instance of ``Plugin`` exposed under the entry-point group ``glocon.plugins``::

    [project.entry-points."glocon.plugins"]
    qgnet = "glocon_qgnet.plugin:plugin"

It declares its typed config model and builds a segmenter; ``fit``, ``evaluate`` and
``objective`` go through the shared few-shot runner (``glocon.fewshot.runner``), so every head
is trained and scored on the same episodes by the same code.

Segmenter interface (what ``build_model`` returns)::

    model(query (B, 3, H, W) in [0, 1], support_images (B, K, 3, H, W), support_masks (B, K, H, W) {0, 1})
      -> {"logits": (B, 2, H, W), optional "aux_logits": [(B, 2, h, w)],
          "prior_region_map": (B, 1, h, w), "guided_region_map": (B, 1, h, w)}
    model.loss(out, target (B, H, W) long, 255 = ignore) -> (total_loss, {name: float})
    model.trainable_parameters() -> list of parameters the optimiser may touch
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Iterable, Literal, Mapping, NamedTuple

from glocon.config import GloconModel, validate_config
from glocon.errors import GloconError

if TYPE_CHECKING:  # only for annotations: the platform must import without torch models loaded
    from importlib.metadata import EntryPoint

    import torch
    from torch import nn

    from glocon.fewshot.config import FewShotConfig
    from glocon.models.prior import PriorExtractor
    from glocon.segmenter import SplitEncoders

GROUP = "glocon.plugins"

PriorKind = Literal["pretrained", "untrained", "imagenet"]


class Row(NamedTuple):
    """One row of a plugin's controlled comparison (``Plugin.variants``: row name -> Row).

    ``overrides``: the model keys the row changes (``"model.use_prior_map=false"``); ``prior``:
    which prior it reads (the pretrained one, the same architecture untrained, F's ImageNet
    backbone exported as a prior, or None for no prior); ``tune``: its settings are chosen on
    base-val episodes first (``Plugin.base_val_choices``), never on novel classes. A Row is a
    tuple, so a plugin may still declare ``(overrides, prior)``.
    """

    overrides: tuple[str, ...] = ()
    prior: PriorKind | None = "pretrained"
    tune: bool = False


class PluginError(GloconError, LookupError):
    """A plugin is unknown, failed to load, or does not follow the protocol."""


class PluginLoadWarning(UserWarning):
    """An entry point of ``glocon.plugins`` could not be loaded; the other plugins still work."""


class Plugin:
    """Base of every few-shot head. Subclasses set the three attributes and ``build_model``."""

    name: str = ""
    config_model: type[GloconModel] = GloconModel
    trainable: bool = False
    description: str = ""
    # rows of a controlled comparison (glocon.fewshot.variants): row name -> (model overrides, which
    # prior: "pretrained" | "untrained" | "imagenet" | None); the first row is the plugin's own, the rest its controls
    # ("imagenet": an export of the pip wheel's ImageNet backbone at the prior's stride, glocon.models.prior)
    # An optional third item True marks a row whose settings are chosen on base-val (base_val_choices).
    variants: dict[str, Row | tuple[Any, ...]] = {}
    # override sets a training-free plugin's "-tuned" rows choose among on base-val episodes
    # (glocon.fewshot.choose), as a trained head's recipe is chosen on base classes
    base_val_choices: tuple[tuple[str, ...], ...] = ()

    def make_config(self, data: dict[str, Any] | GloconModel | None = None, source: str | None = None) -> GloconModel:
        """Validate ``data`` against ``config_model`` (errors name the key and the plugin)."""
        if isinstance(data, self.config_model):
            return data
        if isinstance(data, GloconModel):
            data = data.model_dump()
        return validate_config(self.config_model, dict(data or {}), source or f"plugin {self.name!r}")

    def build_model(self, cfg: GloconModel, prior: "PriorExtractor | None" = None) -> "nn.Module":
        """A segmenter following the interface in this module's docstring."""
        raise NotImplementedError(f"plugin {self.name!r} does not implement build_model")

    # The three verbs delegate to the shared runner, imported late so that listing plugins stays cheap.
    def fit(self, cfg: FewShotConfig | Mapping[str, Any]) -> dict[str, Any]:
        from glocon.fewshot import runner

        return runner.fit(self, cfg)

    def evaluate(self, cfg: FewShotConfig | Mapping[str, Any]) -> dict[str, Any]:
        from glocon.fewshot import runner

        return runner.evaluate(self, cfg)

    def objective(self, prior_path: str, cfg: FewShotConfig | Mapping[str, Any]) -> float:
        """A cheap score of a freshly pretrained prior (higher is better), for Ray Tune."""
        from glocon.fewshot import runner

        return float(runner.objective(self, prior_path, cfg))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} trainable={self.trainable} config={self.config_model.__name__}>"


@dataclass(frozen=True)
class PluginScan:
    """Result of one pass over the entry points: loaded plugins and the ones that failed."""

    plugins: dict[str, Plugin]
    errors: dict[str, str]  # entry-point name -> what went wrong
    sources: dict[str, str]  # entry-point name -> "module:attr (distribution)"


def _source(ep: EntryPoint) -> str:
    dist_name = getattr(getattr(ep, "dist", None), "name", None)
    value = getattr(ep, "value", "?")
    return f"{value} ({dist_name})" if dist_name else str(value)


def _as_plugin(name: str, obj: object) -> Plugin:
    if isinstance(obj, type) and issubclass(obj, Plugin):
        obj = obj()
    if not isinstance(obj, Plugin):
        raise PluginError(f"entry point {name!r} resolved to {type(obj).__name__}, expected a glocon.plugins.Plugin instance")
    if obj.name != name:
        raise PluginError(f"entry point {name!r} resolved to a plugin named {obj.name!r}; the names must match")
    if not (isinstance(obj.config_model, type) and issubclass(obj.config_model, GloconModel)):
        raise PluginError(f"plugin {name!r}: config_model must be a GloconModel subclass, got {obj.config_model!r}")
    return obj


def _entry_points() -> Iterable[EntryPoint]:
    return entry_points(group=GROUP)


def scan_plugins() -> PluginScan:
    """Load every entry point of ``glocon.plugins``; one broken plugin never hides the others."""
    plugins: dict[str, Plugin] = {}
    errors: dict[str, str] = {}
    sources: dict[str, str] = {}
    for ep in _entry_points():
        name = ep.name
        source = _source(ep)
        if name in sources:
            errors[name] = f"declared twice: {sources[name]} and {source}; the first one is used"
            continue
        sources[name] = source
        try:
            plugins[name] = _as_plugin(name, ep.load())
        except Exception as exc:  # an import error, a missing attribute, a protocol mismatch: report, go on
            errors[name] = f"{type(exc).__name__}: {exc}"
    return PluginScan(dict(sorted(plugins.items())), errors, sources)


def discover_plugins() -> dict[str, Plugin]:
    """name -> Plugin for every entry point that loads; each failure is a ``PluginLoadWarning``."""
    scan = scan_plugins()
    for name, err in scan.errors.items():
        warnings.warn(f"glocon plugin {name!r} ({scan.sources.get(name, '?')}) failed to load: {err}", PluginLoadWarning, stacklevel=2)
    return scan.plugins


def load_plugin(name: str) -> Plugin:
    """The plugin called ``name``; the error names it and lists what is available."""
    scan = scan_plugins()
    if name in scan.plugins:
        return scan.plugins[name]
    available = ", ".join(scan.plugins) or "none"
    if name in scan.errors:
        raise PluginError(f"plugin {name!r} is installed but failed to load: {scan.errors[name]} (loaded plugins: {available})")
    raise PluginError(
        f"unknown plugin {name!r}: available plugins are {available} "
        f"(plugins register under the entry-point group {GROUP!r}; is the distribution installed?)"
    )


def list_plugins() -> list[dict[str, str]]:
    """One row per entry point, for ``glocon plugins``: name, status, trainable, config, source."""
    scan = scan_plugins()
    rows: list[dict[str, str]] = []
    for name in sorted({*scan.plugins, *scan.errors}):
        plugin = scan.plugins.get(name)
        if plugin is not None and name not in scan.errors:
            status, kind, config = "ok", "trainable" if plugin.trainable else "training-free", plugin.config_model.__name__
        elif plugin is not None:  # loaded, but a second declaration of the same name was ignored
            status, kind, config = f"warning: {scan.errors[name]}", "trainable" if plugin.trainable else "training-free", plugin.config_model.__name__
        else:
            status, kind, config = f"error: {scan.errors[name]}", "-", "-"
        rows.append({"name": name, "status": status, "kind": kind, "config": config, "source": scan.sources.get(name, "?")})
    return rows


def encode_images(model: SplitEncoders, query: torch.Tensor, support_images: torch.Tensor, support_masks: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], tuple[int, int]]:
    """What a split model's ``head`` takes, from images: (query features (B, ...), support
    features (B, K, ...), output size), through its ``encode_query`` / ``encode_support``, the
    same split the fit cache and evaluation's encode-once read (``glocon.fewshot.encoded``)."""
    b, k = support_images.shape[:2]
    if tuple(support_masks.shape[:2]) != (b, k):
        raise ValueError(f"support_masks {tuple(support_masks.shape)} does not fit support_images {tuple(support_images.shape)}")
    s = model.encode_support(support_images.flatten(0, 1), support_masks.flatten(0, 1))
    return model.encode_query(query), {n: t.view(b, k, *t.shape[1:]) for n, t in s.items()}, tuple(query.shape[-2:])
