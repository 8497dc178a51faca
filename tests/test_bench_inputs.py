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

