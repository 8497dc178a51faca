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


def test_fewshot_table_keeps_overrides_out_of_folds_and_rows_and_checks_rows_first(benches, tmp_path, capsys):
    """`--folds 0 1 2 eval.shots=[5]` once failed after argparse read the override as a fold; a
    misspelt row is refused before any shard or prior is built (tmp_path stays empty)."""
    fewshot_table, _ = benches
    assert [fewshot_table.is_override(a) for a in ("eval.shots=[5]", "fit.novel_images=background", "--out=x", "0", "qgnet")] == [True, True, False, False, False]
    with pytest.raises(SystemExit) as err:
        fewshot_table.main(["--shards", str(tmp_path), "--folds", "0", "1", "eval.shots=[5]", "--rows", "qgnet", "qgnett", "fit.steps=3"])
    assert err.value.code == 2
    assert "unknown row(s) ['qgnett']" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_fewshot_table_writes_a_table_of_the_one_shot_count_evaluated(benches, tmp_path):
    """Only 5-shot evaluated (COCO128 folds 0-2): the table has 5-shot columns and differences,
    computed from the evaluations' own episode counts (it used to fail on a missing '1')."""
    import json
    import types

    from glocon.fewshot.evaluate import COUNTS

    fewshot_table, _ = benches
    dirs = {}
    for row, fg in (("qgnet", 40), ("proto-imagenet", 20)):  # per episode: class, bg inter/union, fg inter/union
        d = tmp_path / row
        d.mkdir()
        episodes = [[c, 80, 100, fg + c, 60] for c in (1, 2, 3) for _ in range(10)]
        (d / COUNTS).write_text(json.dumps({"fold0-5shot-seed321": {"classes": [1, 2, 3], "rows": episodes, "sha256": "same"}}))
        miou = sum((fg + c) / 60 for c in (1, 2, 3)) / 3
        mean = {"5": {"miou": miou, "miou_std": 0.0, "miou_ci": [miou, miou], "fb_iou": 0.5}}
        (d / "results.json").write_text(json.dumps({"shots": [5], "folds": {"0": {}}, "seeds": [321], "mean": mean}))
        dirs[row] = [d]
    lines = fewshot_table._table(dirs, types.SimpleNamespace(folds=[0], fit_seeds=1), [("qgnet", "proto-imagenet")], {}, {})
    assert lines[0] == "| model | 5-shot mIoU | 5-shot FB-IoU | fit: kept step (stopped early) / minutes |"
    assert lines[2].startswith("| qgnet | 70.0 ± 0.0 [70.0, 70.0] | 50.0 | training-free")
    assert [x for x in lines if x.startswith("| qgnet - proto-imagenet |")] == ["| qgnet - proto-imagenet | +33.3 [+33.3, +33.3] |"]
