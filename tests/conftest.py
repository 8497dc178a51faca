"""Shared fixtures: the real data folder (skip when absent) and an isolated Ray."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# every test shares one throwaway feature store (glocon.featstore), never the user's ~/.cache: set
# before any Ray starts, so Ray's workers inherit it
os.environ.setdefault("GLOCON_STORE", tempfile.mkdtemp(prefix="glocon-store-"))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GLOCON_SHARED_DATA", REPO.parent / "shared" / "data"))
COCO128 = SHARED_DATA / "coco128"
SPLITS = SHARED_DATA / "splits"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (expected ../shared/data beside the repo; see ../shared/data/README.md)")
    return path


@pytest.fixture(scope="session")
def coco128() -> Path:
    return require(COCO128)


@pytest.fixture(scope="session")
def splits_dir() -> Path:
    return require(SPLITS)


@pytest.fixture(scope="module")
def photo_shards(coco128, tmp_path_factory) -> Path:
    """Shards of 64 coco128 train photos (80 px, 4 per tar, SLIC + FH maps) for pretraining tests."""
    from pretrain_shards import write_photo_shards

    out = tmp_path_factory.mktemp("photo-shards")
    write_photo_shards(coco128 / "images" / "train2017", out, n_images=64, per_shard=4, side=80)
    return out


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    """A local Ray for the tests of one module (bound to 127.0.0.1, temp dir of its own).

    Module scope, not session scope: each module that needs Ray gets a fresh cluster, so no
    actor, placement group or dead worker left by one module's drills can starve the next
    module's trials, and modules that do not use Ray run with no Ray driver in the process
    (a Ray driver exits the whole process when it loses its GCS, and forking it is unsafe).
    """
    import ray

    from glocon.raycluster import RayConfig, init_ray

    if not ray.is_initialized():
        # Ray's socket paths must stay short (AF_UNIX limit ~107 bytes), so use a short temp root.
        tmp = Path("/tmp") / f"glocon-ray-{os.getpid()}"
        init_ray(RayConfig(num_cpus=2, temp_dir=str(tmp)))
    yield ray


@pytest.fixture
def no_ray_in_process():
    """For a test whose job starts its own Ray in a subprocess: shut down the in-process Ray
    first, so that only one local Ray runs while the test kills and reruns (a later test of the
    module that needs Ray gets the one its job starts in-process, or starts one)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    yield


@pytest.fixture(scope="module", autouse=True)
def _no_ray_across_modules():
    """Shut down any in-process Ray a module started (through ``ray_session`` or a job that
    called ``init_ray`` itself) when the module ends."""
    yield
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
