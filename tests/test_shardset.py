"""ShardSet: the one way to name a set of shards (glocon.data.shardset), and that it stays the one.

Every syntax a config may hold opens to the urls the listers it replaced gave (the manifest's
shards, or sorted absolute tars), ``count`` equals the manifest's and a count of the tars' own
headers, a bad spec is one line naming it, and no other module defines a shard lister.
Shards are written directly (tests/shard_writer.py), no Ray.
"""

from __future__ import annotations

import ast
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from glocon.data.manifest import MANIFEST_NAME, Manifest, Rejection
from glocon.data.schema import Sample
from glocon.data.shardset import ShardSet, ShardSpecError
from glocon.errors import DataError

from shard_writer import write_sample_shards

ROOT = Path(__file__).resolve().parents[1]


def make_sample(i: int) -> Sample:
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[0:16, 0:24]
    mask = np.where(xx < 12, 3, 0).astype(np.uint8)
    meta = {"key": f"img/{i:03d}", "source": f"/data/{i}.jpg", "orig_size": [16, 24], "classes": {"3": int((mask == 3).sum())}}
    return Sample(key=f"img/{i:03d}", image=rng.integers(0, 256, (16, 24, 3), dtype=np.uint8),
                  slic=((yy // 8) * 3 + xx // 8).astype(np.int32), fh=(xx // 12).astype(np.int32), meta=meta, mask=mask)


@pytest.fixture
def built(tmp_path) -> Manifest:
    """7 samples in 3 shards (3, 3, 1) with their manifest."""
    samples = [make_sample(i) for i in range(7)]
    return write_sample_shards(tmp_path / "shards", samples, 3, "shard", {3: [s.key for s in samples]})


def headers_count(urls) -> int:
    """Samples counted independently of glocon's readers: one json member per sample."""
    total = 0
    for url in urls:
        with tarfile.open(url) as tar:
            total += sum(1 for m in tar if m.isfile() and m.name.endswith(".json"))
    return total


def test_every_syntax_opens_to_the_urls_the_old_listers_gave(built, tmp_path):
    root = built.root
    want = [str(root / s.name) for s in built.shards]  # what readers.shard_urls gave: the manifest's order
    assert want == sorted(want) and len(want) == 3
    assert list(ShardSet.open(root).urls) == want  # a folder with manifest.json
    assert list(ShardSet.open(str(root / MANIFEST_NAME)).urls) == want  # the manifest file
    assert list(ShardSet.open(want[1]).urls) == want[1:2]  # a single tar
    assert list(ShardSet.open(str(root / "shard-*.tar")).urls) == want  # a glob (bank's syntax)
    assert list(ShardSet.open(f"{want[2]}, {want[0]}").urls) == [want[0], want[2]]  # comma-separated, sorted
    assert list(ShardSet.open([want[2], Path(want[0])]).urls) == [want[0], want[2]]  # a list (viz's syntax)
    plain = tmp_path / "plain"  # a folder of tars without a manifest: its *.tar, sorted
    shutil.copytree(root, plain, ignore=shutil.ignore_patterns(MANIFEST_NAME))
    assert list(ShardSet.open(plain).urls) == [str(plain.resolve() / s.name) for s in built.shards]
    assert ShardSet.open(root).manifest is not None and ShardSet.open(str(root / "shard-*.tar")).manifest is None
    for name in ("set[1]", "a,b"):  # a folder whose name reads like a glob or a list is still the folder
        odd = tmp_path / name
        shutil.copytree(root, odd)
        assert list(ShardSet.open(odd).urls) == [str(odd / s.name) for s in built.shards]


def test_urls_are_stable_and_leave_empty_shards_out(built):
    built.shards[2].count, built.shards[2].keys = 0, []
    built.totals["samples"] = 6
    built.classes = {3: [k for s in built.shards[:2] for k in s.keys]}
    built.save(built.root)
    first = ShardSet.open(built.root)
    assert first.urls == ShardSet.open(built.root).urls == tuple(str(built.root / s.name) for s in built.shards[:2])
    assert first == ShardSet.open(built.root)


def test_count_is_the_manifests_and_a_count_of_the_headers(built, tmp_path):
    shards = ShardSet.open(built.root)
    assert shards.count == built.totals["samples"] == headers_count(shards.urls) == 7
    plain = tmp_path / "plain"
    shutil.copytree(built.root, plain, ignore=shutil.ignore_patterns(MANIFEST_NAME))
    assert ShardSet.open(plain).count == 7
    two = ShardSet.open(str(built.root / "shard-00000[01].tar"))
    assert two.manifest is None and two.count == headers_count(two.urls) == 6
    assert shards.per_shard == 3 and two.per_shard is None


def test_stream_and_get_read_through_the_readers(built):
    shards = ShardSet.open(built.root)
    keys = [k for s in built.shards for k in s.keys]
    assert sorted(s.key for s in shards.stream()) == keys
    assert shards.get("img/004").key == "img/004" and np.array_equal(shards.get("img/004").mask, make_sample(4).mask)
    loose = ShardSet.open(f"{shards.urls[0]},{shards.urls[2]}")  # no manifest: the tars' headers are scanned
    assert loose.get("img/006").key == "img/006"
    with pytest.raises(DataError, match=r"sample 'img/004' not found in 2 shard\(s\)"):
        loose.get("img/004")


def test_check_names_a_shard_changed_in_place_and_a_truncated_plain_tar(built, tmp_path):
    ShardSet.open(built.root).check()
    shard = built.root / built.shards[1].name
    data = bytearray(shard.read_bytes())
    data[700:716] = bytes(b ^ 0x5A for b in data[700:716])
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"^shard {re.escape(str(shard))}: sha256 differs from the manifest's"):
        ShardSet.open(built.root).check()
    with pytest.raises(DataError, match=rf"^shard {re.escape(str(shard))}: sha256 differs"):  # a tar of a manifest folder
        ShardSet.open(str(shard)).check()
    cut = tmp_path / "cut.tar"
    cut.write_bytes((built.root / built.shards[0].name).read_bytes()[:-1000])
    with pytest.raises(DataError, match=rf"^shard {re.escape(str(cut))}: truncated tar"):
        ShardSet.open(str(cut)).check()


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


@pytest.mark.parametrize("spec, message", [
    ("", r"^shards: empty; expected a shard folder or manifest\.json, a \.tar, a glob or comma-separated \.tar paths"),
    ("{tmp}/nowhere", r"^shards {tmp}/nowhere: no such shard folder or manifest \(make it with jobs/make_shards\.py out_dir={tmp}/nowhere\)"),
    ("{tmp}/empty", r"^shards {tmp}/empty: no manifest\.json and no \*\.tar shards in it \(make them with jobs/make_shards\.py\)"),
    ("{tmp}/x-*.tar", r"^shards {tmp}/x-\*\.tar: no shard file found; expected \.tar shards"),
    ("{tmp}/a.tar,{tmp}/b.tar", r"^shards {tmp}/a\.tar,{tmp}/b\.tar: no shard file found \({tmp}/a\.tar is missing\); expected \.tar shards"),
])
def test_bad_specs_are_one_line_naming_the_spec_and_what_was_expected(tmp_path, spec, message):
    (tmp_path / "empty").mkdir()
    tmp = re.escape(str(tmp_path))
    with pytest.raises(ShardSpecError, match=message.replace("{tmp}", tmp)) as exc:
        ShardSet.open(spec.replace("{tmp}", str(tmp_path)))
    one_line(exc)


def test_a_manifest_without_samples_and_a_bad_manifest_name_their_file(tmp_path):
    folder = tmp_path / "none"
    manifest = write_sample_shards(folder, [], 4, "shard", {})
    manifest.rejected = [Rejection(key="a", path="/data/a.jpg", reason="unreadable")]
    manifest.totals.update(records=1, rejected=1)
    manifest.save(folder)
    with pytest.raises(DataError, match=rf"^shard manifest {re.escape(str(folder / MANIFEST_NAME))} lists no samples \(1 inputs, 1 rejected") as exc:
        ShardSet.open(folder)
    one_line(exc)
    (folder / MANIFEST_NAME).write_text("{")
    with pytest.raises(DataError, match=rf"^shard manifest {re.escape(str(folder / MANIFEST_NAME))}: not readable JSON"):
        ShardSet.open(folder)


# A function that turns a spec into shard paths, under any of the names the old listers had.
LISTER = re.compile(r"^_?(shard_?(urls|list|paths|files)|list_shards|find_shards|glob_shards|count_samples)$")
OWN = {"platform/glocon/data/shardset.py"}


def test_no_module_but_shardset_defines_a_shard_lister():
    found = []
    for folder in ("platform", "plugins", "jobs", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in OWN or any(p.startswith(".") or p in ("build", "__pycache__") for p in path.relative_to(ROOT).parts):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and LISTER.match(node.name):
                    found.append(f"{rel}:{node.lineno} {node.name}")
    assert not found, f"shard listers outside glocon.data.shardset (use ShardSet.open(spec).urls): {found}"
