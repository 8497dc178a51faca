"""What a downstream plugin may import from glocon: this module and nothing else.

A plugin (``glocon.plugins`` entry point) builds a segmenter from its typed config and, if it
wants one, the pretrained prior. Everything it needs from the platform is named here, so the
platform can move its modules without breaking a plugin, and a plugin's author reads one file::

    from glocon.plugin_api import Plugin, Row, GloconModel, PriorExtractor, build_backbone, resize

``tests/test_plugin_api.py`` imports every plugin module with only this module reachable, and
mypy checks this module strictly (``make test``).
"""

from __future__ import annotations

from glocon.config import GloconModel
from glocon.errors import ConfigError
from glocon.models.backbones import Backbone, build_backbone, dilate_resnet_
from glocon.models.prior import PriorExtractor, load_prior_extractor, with_output_stride
from glocon.ops import ALIGN_CORNERS, IGNORE_INDEX, masked_average, resize
from glocon.plugins import Plugin, PluginError, PriorKind, Row, encode_images
from glocon.probe.config import DenseMapName
from glocon.segmenter import Segmenter, region_maps_of
from glocon.regionmaps import (
    EPS,
    GAP_EPS,
    category_guider,
    cosine_similarity_map,
    guided_region_map,
    k_shot_average,
    min_max_normalize,
    prior_region_map,
)


__all__ = [
    "ALIGN_CORNERS",
    "Backbone",
    "ConfigError",
    "DenseMapName",
    "EPS",
    "GAP_EPS",
    "GloconModel",
    "IGNORE_INDEX",
    "Plugin",
    "PluginError",
    "PriorExtractor",
    "PriorKind",
    "Row",
    "Segmenter",
    "build_backbone",
    "category_guider",
    "cosine_similarity_map",
    "dilate_resnet_",
    "encode_images",
    "guided_region_map",
    "k_shot_average",
    "load_prior_extractor",
    "masked_average",
    "min_max_normalize",
    "prior_region_map",
    "region_maps_of",
    "resize",
    "with_output_stride",
]
