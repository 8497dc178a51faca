"""The prior-feature bank: one L2-normalised vector per superpixel of every shard image.

build.py streams shards through a prior export (Ray actors), index.py picks and builds the FAISS
index, provenance.py says where each vector came from, query.py answers "what looks like this
patch?", render.py draws the answer, stats.py scores a bank by class purity.
"""

from glocon.bank.config import BankConfig, IndexConfig, QueryConfig, StatsConfig

__all__ = ["BankConfig", "IndexConfig", "QueryConfig", "StatsConfig"]
