import io
from pathlib import Path

import pytest

from glocon.dashboard import Dashboard, format_eta
from glocon.io import atomic_open, atomic_write_json, atomic_write_text, sha256_file


def test_atomic_write_leaves_the_old_file_when_the_write_fails(tmp_path: Path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "good")
    with pytest.raises(OSError):
        with atomic_open(target, "w") as fh:
            fh.write("half")
            raise OSError("disk full")  # a write that fails mid-way
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temp file left behind


def test_atomic_json_and_sha(tmp_path: Path):
    p = atomic_write_json(tmp_path / "a" / "m.json", {"b": 1})
    assert p.read_text().strip() == '{\n  "b": 1\n}'
    assert len(sha256_file(p)) == 64


def test_plain_dashboard_prints_progress_metrics_and_eta_lines():
    buf = io.StringIO()  # not a TTY
    with Dashboard("job", total=4, unit="shards", stream=buf, log_every_s=0) as dash:
        for _ in range(4):
            dash.advance(1, loss=0.5)
        dash.log("checkpoint saved")
    out = buf.getvalue()
    assert "[job] start: 4 shards" in out
    assert "4/4 shards (100%)" in out and "loss=0.5" in out and "eta" in out
    assert "[job] checkpoint saved" in out and out.rstrip().endswith("| done")
    assert "\x1b[" not in out  # no escape codes off a TTY


def test_rich_dashboard_renders_when_forced_live():
    buf = io.StringIO()
    with Dashboard("job", total=2, stream=buf, plain=False) as dash:
        dash.advance(2, loss=1.25)
    assert "job" in buf.getvalue() and "1.25" in buf.getvalue()


def test_format_eta():
    assert format_eta(3725) == "1:02:05" and format_eta(None) == "?"
