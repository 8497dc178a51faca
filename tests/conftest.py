"""Shared fixtures: the real data folder (skip when absent) and an isolated Ray."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# every test shares one throwaway feature store (glocon.featstore), never the user's ~/.cache: set
# before any Ray starts, so Ray's workers inherit it; deleted when the session ends
_OWN_STORE = None if "GLOCON_STORE" in os.environ else tempfile.mkdtemp(prefix="glocon-store-")
if _OWN_STORE is not None:
    os.environ["GLOCON_STORE"] = _OWN_STORE

# Ray Train V2's controller polls its workers every 2 s (ray.train.v2._internal.constants), so each of
# the suite's ~60 short Train runs waited up to that long to be seen finished or failed: 0.2 s took
# tests/test_fewshot_job.py's seven-run test from 140 s to 120 s. Jobs the tests start inherit it.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")

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


# -- one Ray for the whole session ------------------------------------------------------------
# Starting a local Ray costs ~10-15 s on the 2-core CI box, and ten modules need one in the pytest
# process. So they share one: ``pytest_collection_modifyitems`` runs those modules last, one after
# the other (after every other test, the plugin's included), and ``ray_session`` hands each the
# Ray the one before it used, once that Ray is idle again (every CPU free: no placement group,
# task or actor left holding one by a drill), and starts a fresh one when it is not (or when a
# test or a job shut it down or started another). Everything else still runs with no Ray in the
# process (a Ray driver exits the whole process when it loses its GCS, and forking it is unsafe):
# a module that does not use ``ray_session`` shuts down any Ray on entry and on exit, and a test
# that requests ``no_ray_in_process`` runs before its module's Ray tests.

RAY_CPUS = 2  # the tests' resource sums assume a 2-CPU Ray
_RAY_IDLE_WAIT_S = 30.0  # how long a reused Ray may take to free what the last module's runs held
_RAY_MODULES: set[str] = set()  # node ids of the modules with a test that uses ray_session
_SHARED_RAY: dict[str, str] = {}  # "gcs": the address of the Ray ray_session started


def _module_id(item) -> str:
    return item.nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config, items):
    """Run the modules that use ``ray_session`` last and back to back (the ones that also have
    ``no_ray_in_process`` tests first, those tests first within them), so one Ray serves them all."""
    here = Path(__file__).resolve().parent
    modules: dict[str, list] = {}
    for item in items:
        modules.setdefault(_module_id(item), []).append(item)

    def ours(group) -> bool:
        return Path(str(group[0].fspath)).resolve().parent == here

    def uses(group, name) -> bool:
        return any(name in getattr(item, "fixturenames", ()) for item in group)

    ray_mods = [m for m, group in modules.items() if ours(group) and uses(group, "ray_session")]
    _RAY_MODULES.clear()
    _RAY_MODULES.update(ray_mods)
    if not ray_mods:
        return
    first = [m for m in ray_mods if uses(modules[m], "no_ray_in_process")]
    rest = [m for m in ray_mods if m not in first]
    ordered = [item for m, group in modules.items() if m not in _RAY_MODULES for item in group]
    for m in first + rest:
        ordered += sorted(modules[m], key=lambda item: "no_ray_in_process" not in getattr(item, "fixturenames", ()))
    items[:] = ordered


def _shutdown_ray() -> None:
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def _shared_ray_is_idle(ray) -> str | None:
    """None when the running Ray is the one ``ray_session`` started and all its CPUs are free
    (waiting up to ``_RAY_IDLE_WAIT_S`` for the last module's runs to release theirs), else why not."""
    import time

    if not ray.is_initialized():
        return "no Ray running"
    if _SHARED_RAY.get("gcs") != ray.get_runtime_context().gcs_address:
        return "the running Ray was not started by ray_session"
    deadline = time.monotonic() + _RAY_IDLE_WAIT_S
    while True:
        total, free = ray.cluster_resources().get("CPU", 0.0), ray.available_resources().get("CPU", 0.0)
        if total == RAY_CPUS and free == total:
            return None
        if time.monotonic() > deadline:
            return f"{free:g} of {total:g} CPUs free after {_RAY_IDLE_WAIT_S:g} s"
        time.sleep(0.25)


@pytest.fixture(scope="module")
def ray_session():
    """The session's local Ray (bound to 127.0.0.1, temp dir of its own, 2 CPUs) for this module.

    Reused from the module before when it is idle; restarted when the module before left any
    CPU held (so no placement group, actor or task left by one module's drills can starve the
    next module's trials), or when it is not the Ray this fixture started.
    """
    import warnings

    import ray

    from glocon.raycluster import RayConfig, init_ray

    why = _shared_ray_is_idle(ray)
    if why is not None:
        if ray.is_initialized():
            warnings.warn(f"ray_session: starting a fresh Ray ({why})", stacklevel=1)
            ray.shutdown()
        # Ray's socket paths must stay short (AF_UNIX limit ~107 bytes), so use a short temp root.
        tmp = Path("/tmp") / f"glocon-ray-{os.getpid()}"
        init_ray(RayConfig(num_cpus=RAY_CPUS, temp_dir=str(tmp)))
        _SHARED_RAY["gcs"] = ray.get_runtime_context().gcs_address
    yield ray


@pytest.fixture
def no_ray_in_process():
    """For a test whose job starts its own Ray in a subprocess: shut down the in-process Ray
    first, so that only one local Ray runs while the test kills and reruns (the collection order
    above runs such a test before its module's Ray tests, which then start the shared Ray)."""
    _shutdown_ray()
    yield


@pytest.fixture(scope="module", autouse=True)
def _no_ray_across_modules(request):
    """A module that does not use ``ray_session`` runs with no Ray in the process: any Ray is shut
    down when it starts and when it ends (one a job of the module started through ``init_ray``)."""
    shared = request.node.nodeid in _RAY_MODULES
    if not shared:
        _shutdown_ray()
    yield
    if not shared:
        _shutdown_ray()


@pytest.fixture(scope="session", autouse=True)
def _ray_down_at_session_end():
    yield
    _shutdown_ray()
    import shutil

    # what the session wrote outside pytest's temp folder (see ../conftest.py on disk)
    for path in (_OWN_STORE, *(f"/tmp/glocon-ray{kind}-{os.getpid()}" for kind in ("", "-shards", "-kill"))):
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)
