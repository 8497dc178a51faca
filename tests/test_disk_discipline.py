"""The suite's disk discipline (../conftest.py): a passing test's temp folder and a passed module's
fixture folders are gone when they end; a failing test's, its module's and shared ones stay."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

MODULE_OK = """
import pytest

@pytest.fixture(scope="module")
def made(tmp_path_factory):
    d = tmp_path_factory.mktemp("made_by_ok")
    (d / "x").write_bytes(b"0" * 1000)
    return d

@pytest.fixture(scope="session")
def kept(shared_tmp):
    (shared_tmp / "kept.txt").write_text("for every module")
    return shared_tmp / "kept.txt"

def test_ok_one(tmp_path, made, kept):
    (tmp_path / "f").write_text("x")

def test_ok_two(tmp_path, made, kept):
    assert made.is_dir() and kept.is_file()
"""

MODULE_BAD = """
import pytest

@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return tmp_path_factory.mktemp("made_by_bad")

def test_bad(tmp_path, made):
    (tmp_path / "f").write_text("x")
    assert False, "fails on purpose"

def test_fine(tmp_path, made):
    (tmp_path / "f").write_text("x")
"""


def test_passing_tests_and_modules_leave_no_folders_failing_ones_keep_theirs(pytester):
    pytester.makeconftest((REPO / "conftest.py").read_text())
    pytester.makepyfile(test_ok=MODULE_OK, test_bad=MODULE_BAD)
    base = pytester.path / "base"
    result = pytester.runpytest("-p", "no:cacheprovider", f"--basetemp={base}")
    result.assert_outcomes(passed=3, failed=1)
    left = sorted(p.name for p in base.iterdir() if not p.name.endswith("current"))
    assert left == ["made_by_bad0", "session", "test_bad0"], left
    assert (base / "session" / "kept.txt").read_text() == "for every module"
    assert (base / "test_bad0" / "f").is_file()
