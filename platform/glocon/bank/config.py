"""Typed configs of the bank jobs: build (BankConfig), query (QueryConfig), stats (StatsConfig)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from glocon.featstore.store import StoreConfig
from glocon.config import GloconModel
from glocon.data.superpixels import SuperpixelConfig
from glocon.raycluster import RayConfig

# Which dense map a patch vector is pooled from (glocon.models.prior.DenseMap):
#   prior      = PriorExtractor.prior_features (P_q of Eq. 8, what the plugins see; the default)
#   local_head = the local projection head (the space L_local of Eq. 6 was trained in)
#   backbone   = the backbone's last stage, whatever the export's prior_source says
EmbeddingSource = Literal["prior", "local_head", "backbone"]
PatchMethod = Literal["slic", "fh"]


class IndexConfig(GloconModel):
    """How the FAISS index is chosen. ``factory`` wins when set; otherwise the bank size decides."""

    factory: str | None = None  # e.g. "IVF1024,PQ32"; None: chosen by size (below)
    exact_max: int = 100_000  # up to this many vectors: "IDMap,Flat" (exact)
    ivf_flat_max: int = 2_000_000  # up to this many: "IVF{nlist},Flat"; above: "IVF{nlist},PQ{pq_m}"
    nlist: int | None = None  # IVF lists; None: ~4 sqrt(n), at most n / 39 (faiss wants 39 points per centroid)
    # PQ sub-quantizers (bytes per vector at 8 bits); None: one per dimension. Measured on 1M
    # 128-d vectors (bench/bank.py, docs/results.md): PQ64 caps recall@10 at 0.891, PQ128 reaches
    # 0.933 at nprobe 32, 25x faster than exact, at 137 B/vector against 512 for the raw vectors.
    pq_m: int | None = None
    nprobe: int = 32  # default lists visited per query, recorded in the manifest
    train_size: int = 200_000  # IVF / PQ are trained on a random sample of at most this many vectors
    seed: int = 0
    gpu: Literal["auto", "never"] = "auto"  # auto: build on GPU when faiss sees one


class QueryConfig(GloconModel):
    bank: str | None = None  # bank folder; None: the ``out`` of the bank config it sits in
    prior: str | None = None  # None: the export recorded in the bank manifest
    allow_other_prior: bool = False  # a prior whose sha256 differs from the bank's is an error unless set
    # what to ask about: an existing sample key, or an image file + one of point / box / superpixel
    key: str | None = None
    image: str | None = None
    point: tuple[int, int] | None = None  # (x, y) in pixels of the (resized) query image
    box: tuple[int, int, int, int] | None = None  # (x0, y0, x1, y1), x1/y1 exclusive
    superpixel: int | None = None
    image_size: int | None = Field(None, gt=0)  # longest side an image file is resized to (None: the bank's median shard size)
    superpixels: SuperpixelConfig = SuperpixelConfig()  # for image files; keys use the shard's own maps
    k: int = Field(10, ge=1)
    nprobe: int | None = None  # None: the bank's default
    exclude_same_image: bool = True  # a patch's own image is not an answer worth showing
    out: str | None = None  # folder for hits.json + sheet.png (None: <bank>/queries/<name>)
    tile: int = Field(160, ge=32)  # contact-sheet tile side in pixels
    columns: int = Field(6, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class StatsConfig(GloconModel):
    bank: str | None = None  # bank folder; None: the ``out`` of the bank config it sits in
    k: int = Field(10, ge=1)
    queries: int = 500  # bank vectors with a known class drawn as queries (all when fewer)
    seed: int = 0
    nprobe: int | None = None
    exclude_same_image: bool = True  # neighbours from the query's own image would flatter the prior
    ignore_classes: list[int] = []  # e.g. [0] for COCO's "unlabeled"
    min_dominant_frac: float = 0.5  # a patch has a class only when that class covers this share of it
    per_class: int = 50  # balanced purity: queries drawn from every class (all of a class when it has fewer)
    background_class: int | None = 0  # reported apart from the macro over object classes; None: no background
    out: str | None = None  # where stats.json goes (None: <bank>/stats.json)


class BankConfig(GloconModel):
    prior: str = ""  # prior-extractor export (glocon.models.prior.save_export)
    shards: str = ""  # a folder of *.tar, a glob, a shard manifest, or comma-separated tar paths (glocon.data.shardset)
    out: str = "runs/bank"
    store: StoreConfig = StoreConfig()  # where the prior's dense maps are kept across runs (glocon.featstore)
    patch_method: PatchMethod = "slic"
    embedding: EmbeddingSource = "prior"
    pooling_mode: Literal["area", "majority"] = "area"  # glocon.pooling, as in pretraining
    input_size: int | None = Field(None, gt=0)  # longest side fed to the prior (None: the shard's size); patches stay at shard resolution
    global_embedding: bool = False  # also store the prior's global vector q per image (global.npy)
    batch_size: int = Field(8, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    workers: int = Field(2, ge=0)  # Ray actors, each embedding a subset of shards; 0 = in this process, no Ray
    threads_per_worker: int = 1
    limit: int | None = None  # stop after this many images (smoke runs)
    class_names: str | None = None  # YAML {id: name} or a file with a top-level 'classes:' mapping
    index: IndexConfig = IndexConfig()
    ray: RayConfig = RayConfig()
    # defaults for the query and stats jobs run on this bank (their keys: query.k=12, stats.ignore_classes=[0])
    query: QueryConfig = QueryConfig()
    stats: StatsConfig = StatsConfig()
