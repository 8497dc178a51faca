"""What every Ray job's driver checks before Ray starts (glocon.preflight): no Ray in this module.

Each failure is one line naming the config key to change; the jobs (the sweep too) print it as
``error: ...`` and exit 2. Shards are written directly (tests/shard_writer.py).
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from glocon.config import load_config
from glocon.data.schema import Sample
from glocon.preflight import PreflightError, check_fewshot, check_pretrain, check_shards
from glocon.train.config import PretrainConfig

REPO = Path(__file__).resolve().parents[1]  # not from conftest: plugins/qgnet/tests has a conftest module too
from shard_writer import write_sample_shards

CONFIGS = REPO / "configs"


def sample(i: int) -> Sample:
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[0:32, 0:48]
    mask = np.where(xx < 24, 3, 0).astype(np.uint8)
    meta = {"key": f"img/{i:03d}", "source": f"/data/{i}.jpg", "orig_size": [32, 48], "classes": {"3": int((mask == 3).sum())}}
    return Sample(key=f"img/{i:03d}", image=rng.integers(0, 256, (32, 48, 3), dtype=np.uint8),
                  slic=((yy // 16) * 3 + xx // 16).astype(np.int32), fh=(xx // 24).astype(np.int32), meta=meta, mask=mask)


def shards(folder: Path, n: int = 8, per_shard: int = 8) -> Path:
    samples = [sample(i) for i in range(n)]
    write_sample_shards(folder, samples, per_shard, "shard", {3: [s.key for s in samples]})
    return folder


def pretrain_cfg(tmp_path: Path, *overrides: str) -> PretrainConfig:
    return load_config(PretrainConfig, CONFIGS / "pretrain-demo.yaml", [f"storage_path={tmp_path / 'runs'}", *overrides])


def load_job(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_job", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one_error_line(err: str, prefix: str = "error: ") -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    return lines[0]


def test_one_shard_feeds_two_ranks_only_in_resampled_mode(tmp_path):
    one = shards(tmp_path / "one")
    with pytest.raises(PreflightError, match=r"data\.shards: 1 shard\(s\) cannot feed num_workers=2 ranks .*samples_per_shard=4 \(now 8\) .*data\.resampled=true"):
        check_pretrain(pretrain_cfg(tmp_path, f"data.shards={one}", "num_workers=2", "batch_size=4"))
    check_pretrain(pretrain_cfg(tmp_path, f"data.shards={one}", "num_workers=2", "batch_size=4", "data.resampled=true"))
    check_pretrain(pretrain_cfg(tmp_path, f"data.shards={one}", "num_workers=1", "batch_size=4"))


def test_shards_that_do_not_match_their_manifest_are_named_before_ray_starts(tmp_path):
    folder = shards(tmp_path / "s", n=8, per_shard=2)
    (folder / "shard-000001.tar").unlink()
    with pytest.raises(PreflightError, match=r"data\.shards=.*: shard .*shard-000001\.tar listed in .*manifest\.json is missing \(rerun make_shards"):
        check_pretrain(pretrain_cfg(tmp_path, f"data.shards={folder}", "num_workers=1", "batch_size=2"))
    folder = shards(tmp_path / "t", n=8, per_shard=2)
    with open(folder / "shard-000002.tar", "ab") as fh:
        fh.write(b"\0" * 512)
    with pytest.raises(PreflightError, match=r"shard .*shard-000002\.tar is \d+ bytes, .*manifest\.json says \d+"):
        check_shards(str(folder), "data.shards")
    with pytest.raises(PreflightError, match=r"^data\.shards=.*nowhere: no such shard folder or manifest \(make it with jobs/make_shards\.py"):
        check_shards(str(tmp_path / "nowhere"), "data.shards")
    with pytest.raises(PreflightError, match=r"^data\.shards is empty"):
        check_shards("", "data.shards")


def test_a_shard_changed_in_place_at_the_same_size_is_named_before_ray_starts(tmp_path):
    folder = shards(tmp_path / "s", n=8, per_shard=2)
    shard = folder / "shard-000001.tar"
    size, data = shard.stat().st_size, bytearray(shard.read_bytes())
    data[700:716] = bytes(b ^ 0x5A for b in data[700:716])  # inside the first member, past its header
    shard.write_bytes(bytes(data))
    assert shard.stat().st_size == size
    with pytest.raises(PreflightError, match=rf"^data\.shards={re.escape(str(folder))}: shard {re.escape(str(shard))}: sha256 differs from the manifest's .*Rerun make_shards"):
        check_pretrain(pretrain_cfg(tmp_path, f"data.shards={folder}", "num_workers=1", "batch_size=2"))


def test_fewer_samples_than_one_global_batch_names_batch_size(tmp_path):
    folder = shards(tmp_path / "s", n=8, per_shard=4)
    with pytest.raises(PreflightError, match=r"^batch_size=16: the shards hold 8 samples per epoch, less than one global batch"):
        check_pretrain(pretrain_cfg(tmp_path, f"data.shards={folder}", "batch_size=16"))


def test_bank_build_with_a_missing_prior_ends_in_one_error_line_and_exit_2(tmp_path, capsys):
    folder = shards(tmp_path / "s")
    code = load_job("build_bank").main(["--config", str(CONFIGS / "bank-demo.yaml"), f"prior={tmp_path / 'no-prior.pt'}",
                                        f"shards={folder}", f"out={tmp_path / 'bank'}", "workers=2"])
    assert code == 2
    line = one_error_line(capsys.readouterr().err)
    assert re.match(rf"error: prior={re.escape(str(tmp_path / 'no-prior.pt'))}: no such file \(expected a prior-extractor export", line)
    assert not (tmp_path / "bank").exists()


def test_sweep_with_more_workers_per_trial_than_shards_exits_2_before_ray_starts(tmp_path, capsys):
    import ray

    from sweep_helpers import sweep_dict, write_yaml

    one = shards(tmp_path / "one")
    d = sweep_dict({"pre": one, "obj": one}, tmp_path / "sweeps", "too-wide")
    d["resources"]["workers_per_trial"] = 2
    d["pretrain_overrides"] = [o for o in d["pretrain_overrides"] if not o.startswith("num_workers")]
    code = load_job("sweep").main(["--config", str(write_yaml(tmp_path / "sweep.yaml", d))])
    assert code == 2
    line = one_error_line(capsys.readouterr().err, prefix="error: ")
    assert "1 shard(s) cannot feed resources.workers_per_trial=2 ranks" in line and "samples_per_shard" in line
    assert "data.resampled=true" in line
    assert not ray.is_initialized() and not (tmp_path / "sweeps" / "too-wide").exists()


def test_fewshot_check_names_missing_shards_prior_and_weights(tmp_path):
    from glocon.fewshot.runner import FewShotConfig

    folder = shards(tmp_path / "s")
    ok = FewShotConfig.model_validate({"data": {"shards": str(folder)}})
    check_fewshot(ok, "fit")
    bad = FewShotConfig.model_validate({"data": {"shards": [str(folder), str(tmp_path / "val")]}})
    with pytest.raises(PreflightError, match=r"^data\.shards\[1\]=.*val: no such shard folder"):
        check_fewshot(bad, "fit")
    with pytest.raises(PreflightError, match=r"^prior=.*p\.pt: no such file"):
        check_fewshot(ok.model_copy(update={"prior": str(tmp_path / "p.pt")}), "eval")
    weights = ok.eval.model_copy(update={"weights": str(tmp_path / "fit" / "model.pt")})
    with pytest.raises(PreflightError, match=r"^eval\.weights=.*model\.pt: no such file or folder"):
        check_fewshot(ok.model_copy(update={"eval": weights}), "eval")
    check_fewshot(ok.model_copy(update={"eval": weights}), "fit")  # a fit does not read eval's weights


def test_sweep_resolves_its_paths_against_the_submit_dir(tmp_path, monkeypatch):
    from glocon.paths import SUBMIT_DIR_ENV
    from glocon.tune.space import load_sweep_config
    from glocon.tune.sweep import prepare

    from sweep_helpers import sweep_dict, write_yaml

    home = tmp_path / "checkout"
    shards(home / "runs" / "pre", n=8, per_shard=2)
    d = sweep_dict({"pre": "runs/pre", "obj": "runs/pre"}, "runs/sweeps", "here")
    monkeypatch.setenv(SUBMIT_DIR_ENV, str(home))
    monkeypatch.chdir(tmp_path)
    cfg = load_sweep_config(write_yaml(tmp_path / "sweep.yaml", d))
    base, objective = prepare(cfg)
    assert cfg.experiment_dir == home / "runs" / "sweeps" / "here"
    assert base["data"]["shards"] == str(home / "runs" / "pre") and objective.data.shards == str(home / "runs" / "pre")
    assert objective.episodes_dir == str(home / "runs" / "sweeps" / "here" / "episodes")
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_any_shard_spec_is_checked_and_readers_by_key_need_a_manifest(tmp_path):
    folder = shards(tmp_path / "s", n=8, per_shard=4)
    tars = check_shards(str(folder / "shard-*.tar"), "shards")  # the bank's glob: listed and checked like a folder
    assert len(tars.urls) == 2 and tars.count == 8 and tars.manifest is None
    with pytest.raises(PreflightError, match=r"^data\.shards=.*shard-\*\.tar: names tars without their manifest\.json; expected a shard folder"):
        check_shards(str(folder / "shard-*.tar"), "data.shards", indexed=True)
    with pytest.raises(PreflightError, match=r"^shards=.*nope-\*\.tar: no shard file found; expected \.tar shards"):
        check_shards(str(folder / "nope-*.tar"), "shards")
