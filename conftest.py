"""Disk discipline for the whole suite (tests/ and every plugin's tests).

Left alone, one run of the suite kept ~11 GB in pytest's temp folder until it ended (prior exports,
Ray Train checkpoints, whole demo and README runs): CI's disk filled mid-run and three Ray tests
died of ENOSPC (stop 28). So what a test writes lives only as long as it is needed:

- a passing test's ``tmp_path`` is deleted when the test ends;
- what a module's fixtures made with ``tmp_path_factory`` is deleted when the module ends, if none
  of its tests failed. A folder that must outlive its module (a session fixture's) goes under
  the ``shared_tmp`` fixture's folder, which this never deletes.

A failing test's folders stay, for reading (pytest keeps the last three runs).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]  # tests/test_disk_discipline.py runs this file in a small suite

_SHARED = "session"  # basetemp/<this>: folders kept for the whole run
_FAILED_MODULES: set[str] = set()
_TEST_PASSED = pytest.StashKey[bool]()


@pytest.fixture(scope="session")
def shared_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for what several modules share (kept until pytest's own retention drops it)."""
    path = tmp_path_factory.getbasetemp() / _SHARED
    path.mkdir(exist_ok=True)
    return path


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    if report.failed:
        _FAILED_MODULES.add(str(item.path))  # the module's file
    if report.when == "call":
        item.stash[_TEST_PASSED] = report.passed
    return report


@pytest.fixture(autouse=True)
def _drop_tmp_path_of_a_passing_test(request: pytest.FixtureRequest):
    path = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if path is not None and request.node.stash.get(_TEST_PASSED, False):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def _drop_module_tmp_when_the_module_passed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.getbasetemp()
    before = {p.name for p in base.iterdir()}
    yield
    if str(request.node.path) in _FAILED_MODULES:
        return
    for p in base.iterdir():
        if p.name not in before and p.name != _SHARED and not p.name.endswith("current"):
            shutil.rmtree(p, ignore_errors=True)
