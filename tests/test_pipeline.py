from pathlib import Path

from glocon.pipeline import run_stage


def test_a_stage_reruns_only_when_its_config_changes_or_an_output_is_gone(tmp_path: Path):
    calls = []

    def make():
        calls.append(1)
        out = tmp_path / "out.txt"
        out.write_text(str(len(calls)))
        return {"outputs": {"out": out}, "n": len(calls)}

    first = run_stage(tmp_path, "s", {"a": 1}, make)
    again = run_stage(tmp_path, "s", {"a": 1}, make)
    assert not first.reused and again.reused and len(calls) == 1 and again.info == {"n": 1}
    changed = run_stage(tmp_path, "s", {"a": 2}, make)
    assert not changed.reused and len(calls) == 2
    (tmp_path / "out.txt").unlink()
    assert not run_stage(tmp_path, "s", {"a": 2}, make).reused and len(calls) == 3
