"""glocon.paths.resolve: the one rule for every job's input and output paths (no Ray here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glocon.config import load_config
from glocon.errors import ConfigError
from glocon.paths import RAY_JOB_CONFIG_ENV, SUBMIT_DIR_ENV, ray_job_working_dir, resolve

REPO = Path(__file__).resolve().parents[1]  # not from conftest: plugins/qgnet/tests has a conftest module too


@pytest.fixture
def in_ray_job_copy(tmp_path, monkeypatch):
    """This process as a `ray job submit --working-dir` driver sees itself: cwd inside Ray's copy."""
    copy = tmp_path / "session" / "runtime_resources" / "working_dir_files" / "_ray_pkg_abc"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.delenv(SUBMIT_DIR_ENV, raising=False)
    monkeypatch.setenv(RAY_JOB_CONFIG_ENV, json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_abc.zip"}, "metadata": {}}))
    return copy


def test_uris_and_absolute_paths_pass_through_unchanged_and_relative_ones_follow_the_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv(SUBMIT_DIR_ENV, raising=False)
    monkeypatch.delenv(RAY_JOB_CONFIG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    for uri in ("s3://bucket/runs", "gs://b/x", "file:///mnt/x"):
        assert resolve(uri, "storage_path") == uri
    assert resolve("/mnt/glocon/sweeps", "storage_path") == "/mnt/glocon/sweeps"
    assert resolve("/mnt/glocon/./a/../sweeps", "storage_path") == "/mnt/glocon/sweeps"  # normalised, links not followed
    assert resolve("runs/x", "out") == str(tmp_path / "runs" / "x")
    assert resolve("", "prior") == "" and resolve(None, "prior") is None


def test_relative_paths_resolve_against_the_submit_dir_even_inside_a_ray_job_copy(in_ray_job_copy, tmp_path, monkeypatch):
    home = tmp_path / "checkout"
    home.mkdir()
    monkeypatch.setenv(SUBMIT_DIR_ENV, str(home))
    assert resolve("runs/demo/shards", "data.shards") == str(home / "runs" / "demo" / "shards")
    assert resolve("/abs/shards", "data.shards") == "/abs/shards"


def test_relative_paths_inside_a_ray_job_copy_without_a_submit_dir_are_refused_naming_the_key(in_ray_job_copy):
    assert ray_job_working_dir() == "gcs://_ray_pkg_abc.zip"
    with pytest.raises(ConfigError, match=r"^out=runs/bank is relative.*deleted when the job ends.*out=/path/to/your/checkout/runs/bank"):
        resolve("runs/bank", "out")
    assert resolve("s3://bucket/bank", "out") == "s3://bucket/bank"  # storage URIs still pass


def test_submit_dir_must_be_an_absolute_folder_on_this_node(tmp_path, monkeypatch):
    monkeypatch.setenv(SUBMIT_DIR_ENV, "relative/dir")
    with pytest.raises(ConfigError, match=r"GLOCON_SUBMIT_DIR='relative/dir': expected an absolute folder"):
        resolve("runs/x", "out")
    monkeypatch.setenv(SUBMIT_DIR_ENV, str(tmp_path / "laptop-only"))
    with pytest.raises(ConfigError, match=r"no such folder on this node \(a remote cluster"):
        resolve("runs/x", "out")


def test_pretraining_config_puts_every_path_under_the_submit_dir(in_ray_job_copy, tmp_path, monkeypatch):
    from glocon.train.config import PretrainConfig
    from glocon.train.pretrain import resolved

    home = tmp_path / "checkout"
    home.mkdir()
    monkeypatch.setenv(SUBMIT_DIR_ENV, str(home))
    cfg = resolved(load_config(PretrainConfig, REPO / "configs" / "pretrain-demo.yaml", ["probe.val_shards=runs/val"]))
    assert cfg.storage_path == str(home / "runs" / "pretrain") and cfg.data.shards == str(home / "runs" / "demo" / "shards")
    assert cfg.probe.val_shards == str(home / "runs" / "val") and cfg.run_dir == home / "runs" / "pretrain" / "pretrain-demo"


def test_bank_shard_specs_resolve_against_the_submit_dir(in_ray_job_copy, tmp_path, monkeypatch):
    from glocon.data.shardset import ShardSet

    home = tmp_path / "checkout"
    (home / "runs" / "s").mkdir(parents=True)
    for name in ("a.tar", "b.tar"):
        (home / "runs" / "s" / name).write_bytes(b"\0" * 1024)
    with pytest.raises(ConfigError, match=r"^shards=runs/s/\*\.tar is relative"):
        ShardSet.open("runs/s/*.tar")  # inside Ray's copy, with no submit dir: refused, not globbed in the copy
    monkeypatch.setenv(SUBMIT_DIR_ENV, str(home))
    want = [str(home / "runs" / "s" / n) for n in ("a.tar", "b.tar")]
    assert list(ShardSet.open("runs/s/*.tar").urls) == want == list(ShardSet.open("runs/s/a.tar,runs/s/b.tar").urls)
