"""The glocon CLI runs the same job scripts as `python jobs/X.py`."""

import subprocess
import sys

import pytest

from glocon import cli


def test_help_lists_every_job_with_examples(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for word in ("shards", "pretrain", "sweep", "bank", "fewshot", "show", "plugins", "demo", "examples:"):
        assert word in out


def test_every_subcommand_script_exists_and_defines_main():
    for script, _ in cli.JOBS.values():
        assert callable(cli.load_job(script).main), script
    for script in set(cli.BANK.values()):
        assert callable(cli.load_job(script).main), script


def test_bank_verbs_reach_the_right_entry_of_the_query_job(monkeypatch):
    seen = []
    monkeypatch.setattr(cli, "_run_job", lambda script, argv: seen.append((script, argv)) or 0)
    cli.main(["bank", "query", "--config", "c.yaml", "k=3"])
    cli.main(["bank", "stats", "--config", "c.yaml"])
    cli.main(["bank", "build", "--config", "c.yaml"])
    assert seen == [
        ("query_bank.py", ["--config", "c.yaml", "k=3"]),
        ("query_bank.py", ["stats", "--config", "c.yaml"]),
        ("build_bank.py", ["--config", "c.yaml"]),
    ]


def test_plugins_command_lists_both_shipped_plugins():
    out = subprocess.run([sys.executable, "-m", "glocon.cli", "plugins"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "proto" in out.stdout and "qgnet" in out.stdout


def test_a_config_typo_through_the_cli_names_the_key(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "glocon.cli", "demo", "folds=[0]", "ot=x"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2
    assert "'ot'" in out.stderr and "out" in out.stderr
