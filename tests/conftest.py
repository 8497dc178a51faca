"""Shared fixtures: the real data folder (skip when absent) and an isolated Ray."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """One local Ray for the tests that share it (bound to 127.0.0.1, temp dir of its own)."""
    import ray

    from glocon.raycluster import RayConfig, init_ray

    if ray.is_initialized():
        yield ray
        return
    # Ray's socket paths must stay short (AF_UNIX limit ~107 bytes), so use a short temp root.
    tmp = Path("/tmp") / f"glocon-ray-{os.getpid()}"
    init_ray(RayConfig(num_cpus=2, temp_dir=str(tmp)))
    yield ray
    ray.shutdown()
