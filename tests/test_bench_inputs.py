"""The benches that build on each other's outputs find them: bench/fewshot_table.py reuses the
prior bench/learning_table.py wrote, through the recipe config each init names (a bench is not
run in CI, so this is what catches a renamed config or a changed helper signature)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def benches(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import fewshot_table
    import learning_table

    return fewshot_table, learning_table


def test_fewshot_table_reuses_the_finished_prior_without_training(benches, tmp_path):
    fewshot_table, _ = benches
    for split in ("shards-train", "shards-val"):
        (tmp_path / split).mkdir()
        (tmp_path / split / "manifest.json").write_text("{}")
    run = tmp_path / "pretrain" / "scratch-global-local"
    run.mkdir(parents=True)
    (run / "prior.pt").write_bytes(b"a finished row")
    (run / "summary.json").write_text("{}")
    assert fewshot_table.ensure_inputs("embedded", tmp_path, None) == str((run / "prior.pt").resolve())


@pytest.mark.parametrize("data", ["embedded", "coco128"])
def test_every_init_of_the_learning_table_names_a_recipe_that_loads(benches, data):
    from glocon.config import load_config
    from glocon.train.config import PretrainConfig

    _, learning_table = benches
    for init, name in learning_table.INITS.items():
        cfg = load_config(PretrainConfig, REPO / "configs" / name.format(data=data), [])
        assert (cfg.model.weights is None) == (init == "scratch"), (init, name)



def test_region_maps_bench_says_which_side_each_map_is_high_on(monkeypatch, tmp_path, capsys):
    """bench/region_maps.py reads what an evaluation's RegionMapAccumulator pooled: a map equal
    to the object mask is high on objects, its complement on background, a missing folder is named."""
    import json

    import torch

    from glocon.fewshot.metrics import RegionMapAccumulator

    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import region_maps

    gt = torch.zeros(8, 8, dtype=torch.long)
    gt[2:6, 2:6] = 1
    folds = {}
    for fold in ("0", "1"):
        maps = {}
        for name, m in (("guided", gt.float()), ("prior", 1.0 - gt.float())):
            acc = RegionMapAccumulator()
            acc.update(m.view(1, 1, 8, 8), gt)
            maps[name] = acc.summary()
        folds[fold] = {"1": {"region_maps": maps}}
    (tmp_path / "eval" / "qgnet").mkdir(parents=True)
    (tmp_path / "eval" / "qgnet" / "results.json").write_text(json.dumps({"folds": folds}))
    assert region_maps.main([str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "qgnet_guided_object_minus_background_1shot = 1.0000" in out
    assert "qgnet_prior_object_minus_background_1shot = -1.0000" in out
    assert "| qgnet | prior | 1 | 0: 0.000 / 1.000, 1: 0.000 / 1.000 | -1.000 | background |" in out
    assert region_maps.main([str(tmp_path / "nothing")]) == 2
    assert "nothing: no results.json" in capsys.readouterr().err
