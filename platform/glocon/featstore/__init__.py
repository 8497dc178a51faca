"""The feature store: frozen encoders' outputs, computed once per input and kept on disk (``store``),
and ``memo``, which runs an encoder on a batch through it."""

from glocon.featstore.memo import Slot, StoredEncoders, memo, slot
from glocon.featstore.store import FeatureStore, StoreConfig, StoreStats, open_store, stats_since, tensor_digest, weights_digest

__all__ = ["StoredEncoders", "Slot", "slot", "FeatureStore", "StoreConfig", "StoreStats", "memo", "open_store", "stats_since", "tensor_digest", "weights_digest"]
