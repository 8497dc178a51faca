"""A training-free baseline is tuned the way a trained head's recipe is chosen: on base-val
episodes of the fit split (glocon.fewshot.choose), never on novel classes or the eval split."""

from __future__ import annotations

import json

from fewshot_helpers import MemorySource, toy_items
from glocon.fewshot.config import FewShotConfig
from glocon.fewshot.variants import Variant, resolve_row
from glocon.plugins import load_plugin


def test_a_tuned_row_chooses_its_settings_on_base_val_episodes_only(tmp_path):
    source = MemorySource(toy_items(n_per_class=5), min_pixels=64)
    proto = load_plugin("proto")
    cfg = FewShotConfig.model_validate({
        "plugin": "proto", "model": {"source": "backbone", "backbone": "resnet18", "layer": "layer2"},
        "data": {"folds": [0], "novel_classes": [4]}, "image_size": 64, "episodes_dir": str(tmp_path / "episodes"),
        "objective": {"episodes": 6, "shots": 1},
    })  # fmt: skip
    untouched, none = resolve_row(proto, cfg, Variant("proto", (), None))
    assert none is None and untouched is cfg  # a row that is not tuned keeps its config

    tuned, choice = resolve_row(proto, cfg, Variant("proto", (), None, tune=True), source)
    assert [c for c, _ in choice["scores"]] == [list(c) for c in proto.base_val_choices]  # every candidate scored
    best = max(m for _, m in choice["scores"])
    assert choice["chosen"] == next(c for c, m in choice["scores"] if m == best)  # the first of the best
    assert len({m for _, m in choice["scores"]}) > 1  # the candidates really differ on these episodes
    for text in choice["chosen"]:
        key, value = text.split("=")
        assert str(tuned.model[key.split(".", 1)[1]]) == value  # the row evaluates with what was chosen
    files = sorted((tmp_path / "episodes").glob("*.json"))
    assert files and all("-val-" in f.name for f in files)  # validation episodes only: no test file was drawn
    for f in files:
        header = json.loads(f.read_text())["header"]
        eps = json.loads(f.read_text())["episodes"]
        assert header["novel"] == [4] and all(e["class"] != 4 for e in eps)
        assert all(4 not in source.image_classes(k) for e in eps for k in [e["query"], *e["supports"]])
