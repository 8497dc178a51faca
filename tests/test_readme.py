"""Every command README.md shows, run verbatim, the way a user runs it.

The commands are read from README.md's code blocks (continuation lines joined, trailing comments
dropped), so the README and this test cannot drift: a command the test does not know fails the
test. Each runs with bash in a folder laid out like a checkout (``jobs/``, ``configs/``,
``../shared`` beside it), on data made in the exact layout the command names (``data/pascal`` is a
VOCdevkit tree, ``data/CamVid`` SegNet's CamVid folders, ...), after the commands before it, with
the configs it names swapped for test-size ones of the same name and keys. What it checks is what
the README promises the command makes.

Not run here, and listed so: ``make demo`` / ``make test`` (the suite is ``make test``; the demo's
stages run here command by command), the ``ray job submit`` procedure (``tests/test_pretrain_own_ray.py``
runs it verbatim against a local head), and ``tensorboard`` (a server the user stops).

One module, no Ray in the pytest process: the jobs join one local Ray head started in the clone
(``ray_address``), as on a cluster; a job's own local Ray is started by tests/test_demo.py's demo.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import layout_fixtures as lf
from ray_procs import free_port, local_head
from shard_writer import write_embedded_shards
from tiny_configs import TINY  # test-size configs, shared with tests/test_demo.py

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SHARED = REPO.parent / "shared"

# Commands this module does not run, with where they are exercised instead.
ELSEWHERE = {
    r"^make (demo|test)\b": "the suite is `make test`; the demo's stages run below, command by command",
    r"ray job submit": "tests/test_pretrain_own_ray.py runs README's submit commands verbatim against a local head",
    r"^(RAY_AUTH_MODE=token )?ray (start|stop)\b": "tests/test_pretrain_own_ray.py starts and ends its own local head",
    r"^export RAY_API_SERVER_ADDRESS=": "tests/test_pretrain_own_ray.py points ray job at its head the same way",
}


def readme_commands() -> list[str]:
    """Every command line in README.md's fenced code blocks, in order."""
    out = []
    for block in re.findall(r"^ *```\n(.*?)^ *```", README.read_text(), re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()  # a trailing comment is not part of the command
            if line:
                out.append(" ".join(line.split()))
    return out


def job_env(cwd: Path) -> dict[str, str]:
    """The environment each README command runs in: a user's shell in the clone, nothing of ours."""
    return {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(cwd), "GLOCON_CACHE": str(cwd / "runs" / "cache")}


def run(command: str, cwd: Path, ray_address: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(job_env(cwd), RAY_ADDRESS=ray_address)
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"README command failed: {command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def checkout(tmp_path_factory, no_ray_module):
    """A user's clone, beside ``../shared``, with the data the README's commands name."""
    top = tmp_path_factory.mktemp("readme")
    root = top / "clone"
    root.mkdir()
    for name in ("jobs", "configs"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    if SHARED.is_dir():
        mirror_shared(top / "shared", COCO128_TRAIN_IMAGES)
    for name, text in TINY.items():
        (root / "configs" / name).write_text(f"# tests/test_readme.py: configs/{name} at test size\n" + text.lstrip())
    explore = (root / "configs" / "explore-demo.yaml").read_text().replace("port: 8765", f"port: {free_port()}")
    (root / "configs" / "explore-demo.yaml").write_text(explore)
    data = root / "data"
    lf.make_voc(data / "pascal")
    lf.make_coco_instances(data / "coco", split="train2014")
    lf.make_fss(data)  # data/FSS-1000 and data/splits/{trn,val,test}.txt
    (data / "splits").rename(data / "fss-splits")
    (data / "splits").mkdir()
    (data / "fss-splits").rename(data / "splits" / "fss")  # HSNet's data/splits/fss
    lf.make_camvid(data / "CamVid")
    # what make_shards writes for the demo (tiny): the train and val splits of the embedded data
    runs = root / "runs" / "demo"
    write_embedded_shards(runs, "train", 32, size=96).rename(runs / "shards")  # 96 px: the README's query point [60,80] lies inside
    write_embedded_shards(runs, "val", 24, size=96).rename(runs / "shards-val")
    return root


# The README's coco128 command reads ../shared/data/coco128 verbatim; the checkout's ../shared holds
# the real photos, but only the first 16 of train2017 (with their masks): the whole 128 at 473 px
# took ~50 s of the suite for what 16 show as well (the layout, masked and unmasked photos).
COCO128_TRAIN_IMAGES = 16


def mirror_shared(dst: Path, n_train: int) -> None:
    """``dst`` as ``../shared``, file by file as symlinks, but with only the first ``n_train`` of
    coco128's train2017 photos and their masks."""
    coco = SHARED / "data" / "coco128"
    keep = {p.stem for p in sorted((coco / "images" / "train2017").iterdir())[:n_train]}
    for src in sorted(SHARED.rglob("*")):
        rel = src.relative_to(SHARED)
        if src.is_dir() or (rel.parts[:2] == ("data", "coco128") and "train2017" in rel.parts and src.stem not in keep):
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        (dst / rel).symlink_to(src)


@pytest.fixture(scope="module")
def ray_address(checkout):
    """One local Ray head, started in the clone with the commands' environment, that every command
    joins (``RAY_ADDRESS``, as on a cluster): nine of them use Ray, and a Ray of their own costs
    each ~10 s to start on 2 cores. Its workers' working folder is the clone, as a job's own Ray's
    is. A job starting its own local Ray is exercised by tests/test_demo.py and the drills."""
    with local_head(Path(f"/tmp/grm-{os.getpid()}"), cwd=checkout, env=job_env(checkout)) as env:
        yield env["RAY_ADDRESS"]


@pytest.fixture(scope="module")
def no_ray_module():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    yield


def test_every_readme_command_is_run_here_or_named_where_it_is(checkout):
    known = [c for c in readme_commands() if not any(re.search(p, c) for p in ELSEWHERE)]
    missing = [c for c in known if not any(re.search(p, c) for p in CHECKS)]
    assert not missing, f"README commands no test runs (add them to tests/test_readme.py CHECKS): {missing}"
    assert all(any(re.search(p, c) for c in readme_commands()) for p in CHECKS), "a CHECKS entry matches no README command any more"


# -- what each command must have made ----------------------------------------------------------
def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def check_voc(root: Path, out: subprocess.CompletedProcess) -> None:
    assert _manifest(root / "runs" / "pascal" / "shards")["totals"]["samples"] > 0


def check_coco(root: Path, out: subprocess.CompletedProcess) -> None:
    assert _manifest(root / "runs" / "coco" / "shards")["totals"]["samples"] > 0


def check_fss(root: Path, out: subprocess.CompletedProcess) -> None:
    assert _manifest(root / "runs" / "fss" / "shards")["totals"]["samples"] > 0


def check_coco128(root: Path, out: subprocess.CompletedProcess) -> None:
    m = _manifest(root / "runs" / "coco128" / "shards")
    assert m["totals"]["samples"] == COCO128_TRAIN_IMAGES  # every train2017 photo of ../shared (pretraining reads them all)
    masks = root.parent / "shared" / "data" / "coco128" / "semantic_segmentation" / "masks" / "train2017"
    masked = {k for keys in m["classes"].values() for k in keys}
    assert 0 < len(masked) <= len(list(masks.glob("*.png")))  # only photos with a mask enter the class index


def check_camvid(root: Path, out: subprocess.CompletedProcess) -> None:
    table = _manifest(root / "runs" / "camvid" / "shards")["class_table"]
    assert "11 -> 255" in out.stdout and table["names"]


def check_pretrain(root: Path, out: subprocess.CompletedProcess) -> None:
    from glocon.models.prior import load_prior_extractor

    assert "patches_per_image =" in out.stdout and "L_global =" in out.stdout
    load_prior_extractor(root / "runs" / "pretrain" / "pretrain-demo" / "prior.pt")
    # the demo's export, which the bank, probe and few-shot commands read
    target = root / "runs" / "demo" / "pretrain" / "prior" / "prior.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(root / "runs" / "pretrain" / "pretrain-demo" / "prior.pt", target)


def check_probe(root: Path, out: subprocess.CompletedProcess) -> None:
    res = json.loads((root / "runs" / "demo" / "probe" / "results.json").read_text())
    assert set(res["priors"]) == {"pretrained", "untrained"} and res["priors"]["untrained"]["retrieval_miou"]["n"] == 2


def check_sweep(root: Path, out: subprocess.CompletedProcess) -> None:
    assert (root / "runs" / "sweeps" / "sweep-demo" / "results.md").is_file()


def check_bank_build(root: Path, out: subprocess.CompletedProcess) -> None:
    assert json.loads((root / "runs" / "demo" / "bank" / "manifest.json").read_text())["count"] > 0


def check_bank_query(root: Path, out: subprocess.CompletedProcess) -> None:
    assert "hits:" in out.stdout and "sheet:" in out.stdout


def check_bank_stats(root: Path, out: subprocess.CompletedProcess) -> None:
    assert "balanced_macro =" in out.stdout


def check_fit(root: Path, out: subprocess.CompletedProcess) -> None:
    assert (root / "runs" / "demo" / "fewshot" / "fit-fold0-1shot" / "model.pt").is_file()


def check_eval(root: Path, out: subprocess.CompletedProcess) -> None:
    res = json.loads((root / "runs" / "demo" / "fewshot" / "eval" / "results.json").read_text())
    assert res["eval_split"].startswith("held out") and "miou_ci" in res["mean"]["1"]
    # the demo's two evaluations on the same episodes, which `compare` reads
    for name in ("qgnet", "proto-imagenet"):
        shutil.copytree(root / "runs" / "demo" / "fewshot" / "eval", root / "runs" / "demo" / "eval" / name)


def check_compare(root: Path, out: subprocess.CompletedProcess) -> None:
    assert "miou_difference_1shot = 0.000" in out.stdout  # the same evaluation twice: no difference


def check_explore(root: Path, proc: subprocess.Popen) -> None:
    port = re.search(r"port: (\d+)", (root / "configs" / "explore-demo.yaml").read_text()).group(1)
    deadline = time.time() + 180
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                assert r.status == 200 and b"shards" in r.read().lower()
                return
        except OSError:
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.time() < deadline, "the explorer did not answer on its port"
            time.sleep(1)


def check_store_du(root: Path, out: subprocess.CompletedProcess) -> None:
    # the probe, bank and few-shot commands above kept their frozen maps in the default store ($HOME's cache)
    assert re.search(r"[1-9]\d* entries", out.stdout) and str(root / ".cache" / "glocon" / "features") in out.stdout, out.stdout


def check_store_ls(root: Path, out: subprocess.CompletedProcess) -> None:
    assert "dense_map:" in out.stdout and "total" in out.stdout, out.stdout


def check_store_prune(root: Path, out: subprocess.CompletedProcess) -> None:
    assert out.stdout.startswith("pruned ") and "entries" in out.stdout, out.stdout


def _exported(root: Path, name: str) -> Path:
    return root / "runs" / "demo" / "pretrain" / "prior" / name


def check_export_timm(root: Path, out: subprocess.CompletedProcess) -> None:
    import timm
    import torch

    assert "check: loads strict=True" in out.stdout, out.stdout
    timm.create_model("resnet18").load_state_dict(torch.load(_exported(root, "prior-timm.pth"), weights_only=True))  # the demo prior's arch


def check_export_torchvision(root: Path, out: subprocess.CompletedProcess) -> None:
    import torch
    import torchvision

    assert "check: loads strict=True" in out.stdout, out.stdout
    torchvision.models.resnet18().load_state_dict(torch.load(_exported(root, "prior-torchvision.pth"), weights_only=True))


def check_export_onnx(root: Path, out: subprocess.CompletedProcess) -> None:
    import numpy as np
    import onnxruntime

    assert "check: onnxruntime matches" in out.stdout, out.stdout
    images = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    features = onnxruntime.InferenceSession(str(_exported(root, "prior.onnx"))).run(None, {"images": images})[0]
    assert features.shape == (1, 512, 4, 4)  # resnet18 at the demo's output stride 16


CHECKS = {
    r"make_shards\.py --config configs/shards-voc\.yaml": check_voc,
    r"make_shards\.py --config configs/shards-coco\.yaml": check_coco,
    r"make_shards\.py --config configs/shards-fss\.yaml": check_fss,
    r"make_shards\.py --config configs/shards-coco128\.yaml": check_coco128,
    r"make_shards\.py .*data\.layout=semantic": check_camvid,
    r"^python jobs/pretrain\.py": check_pretrain,
    r"^python jobs/probe\.py": check_probe,
    r"^python jobs/sweep\.py": check_sweep,
    r"^python jobs/build_bank\.py": check_bank_build,
    r"^python jobs/query_bank\.py --config": check_bank_query,
    r"^python jobs/query_bank\.py stats": check_bank_stats,
    r"^python jobs/fewshot\.py fit": check_fit,
    r"^python jobs/fewshot\.py eval": check_eval,
    r"^python jobs/fewshot\.py compare": check_compare,
    r"^python jobs/explore\.py": check_explore,
    r"^glocon store du": check_store_du,
    r"^glocon store ls": check_store_ls,
    r"^glocon store prune": check_store_prune,
    r"^glocon export .* --format timm ": check_export_timm,
    r"^glocon export .* --format torchvision ": check_export_torchvision,
    r"^glocon export .* --format onnx ": check_export_onnx,
}
SERVERS = (r"^python jobs/explore\.py",)


def _command_id(command: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", command)[:80]


# One test per command, in README order (pytest keeps parametrize order; each command may read what
# the ones before it wrote, in the same module-scoped checkout), so each has its own timeout and a
# failure names its command.
@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("command", readme_commands(), ids=_command_id)
def test_readme_command_runs_verbatim(checkout, ray_address, command):
    if any(re.search(p, command) for p in ELSEWHERE):
        pytest.skip("run elsewhere: " + next(why for p, why in ELSEWHERE.items() if re.search(p, command)))
    (pattern, check), = [(p, c) for p, c in CHECKS.items() if re.search(p, command)]
    if "coco128" in command and not SHARED.is_dir():
        pytest.skip(f"real data not found at {SHARED / 'data'} (the README's coco128 command reads it)")
    if any(re.search(p, command) for p in SERVERS):
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(checkout)}
        proc = subprocess.Popen(["bash", "-c", command], cwd=checkout, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            check(checkout, proc)
        finally:
            import os
            import signal

            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        return
    check(checkout, run(command, checkout, ray_address))
