from pathlib import Path

import pytest
import yaml

from glocon.config import GloconModel, load_config, parse_override, save_resolved, split_cli, all_keys
from glocon.errors import ConfigError


class Inner(GloconModel):
    epochs: int = 2
    tau: float = 0.2


class Outer(GloconModel):
    name: str = "run"
    train: Inner = Inner()
    tags: list[str] = []


def test_overrides_are_parsed_as_yaml_and_applied_to_nested_keys(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("name: a\ntrain:\n  epochs: 5\n")
    cfg = load_config(Outer, path, ["train.tau=0.07", "tags=[x, y]"])
    assert cfg.name == "a" and cfg.train.epochs == 5 and cfg.train.tau == 0.07 and cfg.tags == ["x", "y"]


def test_unknown_key_names_the_key_and_the_nearest_valid_keys():
    with pytest.raises(ConfigError) as err:
        load_config(Outer, None, ["train.epoch=3"])
    msg = str(err.value)
    assert "train.epoch" in msg and "train.epochs" in msg


def test_wrong_type_names_the_field_the_expected_type_and_the_value():
    with pytest.raises(ConfigError) as err:
        load_config(Outer, None, ["train.epochs=many"])
    msg = str(err.value)
    assert "train.epochs" in msg and "int" in msg and "'many'" in msg


def test_missing_file_names_the_path(tmp_path: Path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(Outer, missing)


def test_top_level_must_be_a_mapping(tmp_path: Path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Outer, path)


def test_resolved_config_round_trips_through_yaml(tmp_path: Path):
    cfg = load_config(Outer, None, ["train.epochs=7"])
    out = save_resolved(cfg, tmp_path)
    assert load_config(Outer, out) == cfg
    assert yaml.safe_load(out.read_text())["train"]["epochs"] == 7


def test_override_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("train.epochs")


def test_split_cli_separates_config_and_overrides():
    assert split_cli(["--config", "a.yaml", "x.y=1"]) == ("a.yaml", ["x.y=1"])
    with pytest.raises(ConfigError):
        split_cli(["--bogus"])


def test_all_keys_expands_nested_models():
    assert {"name", "train", "train.epochs", "train.tau", "tags"} == set(all_keys(Outer))
