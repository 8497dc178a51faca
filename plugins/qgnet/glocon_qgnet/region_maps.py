"""QGNet's region maps and category guider (Eq. 9-12). One definition, in the platform's
``glocon.regionmaps``, through ``glocon.plugin_api`` (the dense probe measures them too); re-exported here under the plugin's name."""

from glocon.plugin_api import (  # noqa: F401
    EPS,
    GAP_EPS,
    category_guider,
    cosine_similarity_map,
    guided_region_map,
    k_shot_average,
    min_max_normalize,
    prior_region_map,
)
