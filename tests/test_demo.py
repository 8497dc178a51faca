"""The demo pipeline's wiring: every model variant reads the same episodes; the table shows what was measured."""

from pathlib import Path

import pytest

from glocon.config import load_config
from glocon.demo.config import DemoConfig
from glocon.demo.report import results_table
from glocon.demo.stages import _fewshot_cfg
from glocon.fewshot.variants import variants

REPO = Path(__file__).resolve().parents[1]


def test_every_variant_shares_the_episode_files_and_only_the_ablation_differs(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    cfg = load_config(DemoConfig, REPO / "configs" / "demo.yaml")
    priors = {"pretrained": str(tmp_path / "prior.pt"), "untrained": str(tmp_path / "untrained.pt"), "imagenet": str(tmp_path / "imagenet.pt"), None: None}
    rows = variants(cfg.plugins)
    # declared by each plugin: its own row first, then its controls
    assert list(rows) == ["qgnet", "qgnet-no-prior", "qgnet-untrained-prior", "qgnet-imagenet-prior", "proto-imagenet", "proto-prior", "proto-imagenet-tuned"]
    assert [r for r, v in rows.items() if v.tune] == ["proto-imagenet-tuned"]
    built = {v: _fewshot_cfg(cfg, tmp_path, v, priors[rows[v].prior]) for v in rows}
    assert {c.episodes_dir for c in built.values()} == {str(tmp_path / "episodes")}
    assert {c.prior for v, c in built.items() if rows[v].prior == "pretrained"} == {str(tmp_path / "prior.pt")}
    assert built["qgnet-untrained-prior"].prior == str(tmp_path / "untrained.pt") and built["proto-imagenet"].prior is None
    assert built["qgnet-untrained-prior"].model == built["qgnet"].model == built["qgnet-imagenet-prior"].model  # the controls differ only in their prior
    assert built["qgnet-imagenet-prior"].prior == str(tmp_path / "imagenet.pt")
    assert built["proto-imagenet-tuned"].model == built["proto-imagenet"].model  # until base-val chooses
    assert built["qgnet"].model.get("use_prior_map", True) is True
    assert built["qgnet-no-prior"].model["use_prior_map"] is False
    assert {k: v for k, v in built["qgnet"].model.items()} == {k: v for k, v in built["qgnet-no-prior"].model.items() if k != "use_prior_map"}
    assert "use_prior_map" not in built["proto-prior"].model  # QGNet's model keys never reach the proto config
    assert built["qgnet"].eval.out_dir != built["proto-prior"].eval.out_dir


def test_results_table_prints_percentages_per_model_and_shot():
    table = results_table({"a": {"mean": {"1": {"miou": 0.123, "fb_iou": 0.5}, "5": {"miou": 0.2, "fb_iou": 0.61}}}})
    assert "| a | 12.3 | 50.0 | 20.0 | 61.0 |" in table
    assert table.splitlines()[0] == "| model | 1-shot mIoU | 1-shot FB-IoU | 5-shot mIoU | 5-shot FB-IoU |"


def test_comparisons_pair_the_first_row_with_its_controls_and_every_row_of_other_plugins():
    from glocon.fewshot.variants import Variant, comparisons

    rows = {"a": Variant("p"), "a-off": Variant("p", ("model.x=false",)), "b": Variant("q", (), None), "b2": Variant("q", tune=True)}
    assert comparisons(rows) == [("a", "a-off"), ("a", "b"), ("a", "b2")]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_whole_demo_runs_end_to_end_at_test_size_and_reports_every_row(tmp_path):
    """`make demo`'s own entry (jobs/demo.py + configs/demo.yaml's keys), every stage, on tiny inputs, in a
    subprocess with its own local Ray; then a rerun reuses every stage."""
    import json
    import shutil
    import re
    import subprocess
    import sys

    from tiny_configs import TINY

    shutil.copytree(REPO / "configs", tmp_path / "configs")
    for name, text in TINY.items():
        (tmp_path / "configs" / name).write_text(text)
    demo = (REPO / "configs" / "demo.yaml").read_text()
    demo = demo.replace("embedded: {n_images: 400, size: 256, seed: 0}", "embedded: {n_images: 64, size: 96, seed: 0}")
    demo = demo.replace("pretrain_config: configs/pretrain-embedded-lite0.yaml", "pretrain_config: configs/pretrain-demo.yaml")
    assert "n_images: 64," in demo and "pretrain-demo.yaml" in demo
    (tmp_path / "configs" / "demo.yaml").write_text(demo + "val_images: 24\nquery_point: [30, 30]\n")
    # the tiny stage configs as they are: the demo's own sizes (epochs, fit steps) are for the full data
    overrides = [
        "overrides.shards=[samples_per_shard=8,longest_side=96,superpixels.slic.n_segments=16,data.min_class_pixels=64]",
        "overrides.pretrain=[]", "overrides.fewshot=[]",
    ]  # fmt: skip
    cmd = [sys.executable, str(REPO / "jobs" / "demo.py"), "--config", "configs/demo.yaml", *overrides]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = (tmp_path / "runs" / "demo" / "report.md").read_text()
    for row in ("qgnet", "qgnet-no-prior", "qgnet-untrained-prior", "qgnet-imagenet-prior", "proto-imagenet", "proto-prior", "proto-imagenet-tuned"):
        assert f"| {row} |" in report, row
    assert "| qgnet - qgnet-no-prior |" in report and "| qgnet - proto-imagenet |" in report and "| qgnet - proto-imagenet-tuned |" in report
    assert "settings chosen on base-val episodes" in report  # the tuned row says what it chose
    assert "retrieval" in report  # the probe table
    assert "Sizes and settings on top of each stage's config" in report and "samples_per_shard=8" in report  # what the demo changed, said
    assert "## Feature store" in report and re.search(r"feature store .*: \d+ hits, [1-9]\d* misses", done.stdout), done.stdout[-2000:]
    assert "python jobs/explore.py --config configs/explore-demo.yaml" in done.stdout.strip().splitlines()[-1]
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "done in" not in again.stdout, again.stdout[-2000:]
    timing = json.loads((tmp_path / "runs" / "demo" / "timing.json").read_text())
    assert all(s["reused"] for s in timing["stages"].values())
