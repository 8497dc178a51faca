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


def test_run_job_turns_glocon_errors_into_one_line_and_the_exit_code_of_their_phase(capsys):
    from glocon.errors import DataError
    from glocon.jobmain import run_job

    def fail(_):
        raise DataError("no such data")

    assert run_job(["nope"], lambda args: args, lambda cfg: None) == 0
    assert run_job(["nope"], fail, lambda cfg: None, label="demo") == 2
    assert capsys.readouterr().err == "demo: no such data\n"
    assert run_job([], lambda args: args, fail, run_exit=1) == 1
    assert capsys.readouterr().err == "error: no such data\n"
    with pytest.raises(DataError):  # run_exit=None: a failure mid-run keeps its traceback
        run_job([], lambda args: args, fail, run_exit=None)


def test_run_job_reads_a_config_model_from_config_and_overrides(tmp_path, capsys):
    from glocon.demo.config import DemoConfig
    from glocon.jobmain import run_job

    seen = []
    assert run_job([f"out={tmp_path}"], DemoConfig, seen.append) == 0
    assert seen[0].out == str(tmp_path)
    assert run_job(["ot=x"], DemoConfig, seen.append) == 2
    assert "'ot'" in capsys.readouterr().err and len(seen) == 1


@pytest.mark.slow
def test_the_cli_runs_every_job_from_an_installed_wheel_without_a_checkout(tmp_path):
    """`pip install glocon` has no jobs/ folder: the CLI must find every job inside the package."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(repo)], check=True, timeout=600)
    wheel = next((tmp_path / "dist").glob("glocon-*.whl"))
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=600)
    code = (
        "import glocon, sys; from glocon import cli; "
        f"assert glocon.__file__.startswith({str(site)!r}), glocon.__file__; "
        "sys.exit(max(cli.main([c, '-h']) for c in ['shards', 'pretrain', 'sweep', 'probe', 'fewshot', 'demo', 'explore']))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "python jobs/pretrain.py --config" in done.stdout  # the job's own usage, read from the installed module
