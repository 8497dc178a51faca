"""Hostile inputs, each run the way a user would: one real CLI subprocess per case (issue 22, item 8).

    python bench/hostile.py                 # every case, in a fresh temp folder (removed afterwards)
    python bench/hostile.py -k voc -k coco  # only the cases whose name holds one of these
    python bench/hostile.py --keep DIR      # keep the cases' folders and their stdout / stderr in DIR
    python bench/hostile.py --list          # the cases, without running them

Every case gets a folder of its own under the temp folder, filled with tiny inputs (64 x 48 px
images, a handful of samples, the layouts of ``tests/layout_fixtures.py``, shards written by
``tests/shard_writer.py``) and one hostile change: a truncated JPEG, a mask of the wrong size, a
VOC list naming a missing id, a YAML "billion laughs" as a config or as class names, a negative
size, a shard with bytes flipped, a manifest whose class index was edited, a pickle that calls
``os.system`` as a prior, a checkpoint or a model, an episode file edited, an evaluation with another
class split than the fit's, and so on, across every job (shards, pretrain, sweep, bank build /
query / stats, probe, fewshot fit / eval / compare, explore, demo, show, store) and every layout
(folder, voc, coco instances / panoptic / semantic_png, fss, semantic, embedded). Then it runs
``python -m glocon.cli ...`` or ``python jobs/<job>.py --config ... key=value`` in that folder and
records, per case:

- the exit code and the wall seconds of the command;
- the peak RSS in MB of the command (``/usr/bin/time -f %M``: its largest single process, reaped
  children included), and beside it the peak of the RSS summed over its whole process tree, sampled
  from /proc every 0.2 s (Ray's daemons and workers are children of the job; shared pages count
  once per process, so the sum is an upper bound);
- ``clear``: exit 1 or 2, exactly one stderr line starting with ``error:``, that line holding the
  culprit the case names (a file name, a key or a field: a substring given per case), no traceback
  (in stderr or stdout), and every extra substring the case asks for somewhere in stderr;
- ``lost``: a file that existed before the run (the case's folder and the shared fixtures, by
  sha256) is missing or changed afterwards;
- ``silent``: exit 0, although every case expects an error.

Shard-writer cases about one bad image or mask run with ``strict=true``, so that the bad input is an
error naming the file rather than a ``rejected`` entry; their shard tasks are run in this process
first (``build_shard``, exactly what make_shards' Ray task runs), so the job finds every shard done
and starts no Ray, as tests/test_hostile_inputs.py does. Two cases do start Ray (a folder whose
every image is unreadable, and strict=true finding a truncated JPEG inside a Ray task); every other
job must refuse its input before Ray starts. The cases run one at a time; the figures are meant for
a 2-core machine (``nice -n 19`` is fine: the limits below are wide).

A table of every case comes first, then the failing ones with their first ``error:`` line (or
the last stderr line), and last the headline figures: ``hostile_cases``, ``hostile_clear_errors``
(goal = cases), ``hostile_silent`` (goal 0), ``hostile_data_lost`` (goal 0),
``hostile_max_rss_mb`` (goal <= 2048) and ``hostile_max_s`` (goal <= 30).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the fixture helpers: layout_fixtures, shard_writer, tiny_configs

PY = sys.executable
CLI = [PY, "-m", "glocon.cli"]
TIMEOUT_S = 150  # per case; a case that runs longer is killed (and is neither clear nor fast)
SHARDS_SMALL = ["longest_side=64", "samples_per_shard=8", "superpixels.slic.n_segments=16"]


def job(name: str) -> list[str]:
    """``python jobs/<name>.py``: the plain script ``ray job submit`` runs."""
    return [PY, str(REPO / "jobs" / f"{name}.py")]


# ---------------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------------
@dataclass
class Plan:
    argv: list[str]
    culprit: str  # a substring the one `error:` line must hold (file name, key, field)
    also: tuple[str, ...] = ()  # substrings expected anywhere in stderr
    must_not_exist: tuple[Path, ...] = ()  # e.g. the file a pickle payload would create if it ran
    ray: bool = False  # the case starts Ray (at most a few)
    timeout: int = TIMEOUT_S


@dataclass
class Case:
    name: str
    job: str
    layout: str
    prepare: Callable[[Path, "World"], Plan]


@dataclass
class Result:
    case: Case
    plan: Plan | None
    rc: int
    seconds: float
    rss_mb: float
    error_lines: list[str]
    named: bool
    traceback: bool
    lost: list[str]
    missing_also: list[str] = field(default_factory=list)
    ran_code: list[str] = field(default_factory=list)
    timed_out: bool = False
    last_line: str = ""
    tree_mb: float = 0.0

    @property
    def silent(self) -> bool:
        return self.rc == 0

    @property
    def clear(self) -> bool:
        return (self.rc in (1, 2) and len(self.error_lines) == 1 and self.named and not self.traceback
                and not self.missing_also and not self.timed_out)


CASES: list[Case] = []


def case(job_name: str, layout: str = "-"):
    def register(fn: Callable[[Path, "World"], Plan]) -> Callable[[Path, "World"], Plan]:
        CASES.append(Case(fn.__name__, job_name, layout, fn))
        return fn

    return register


# ---------------------------------------------------------------------------------------------
# the shared fixtures (built once, in this process; read by many cases, changed by none)
# ---------------------------------------------------------------------------------------------
class World:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.shared = root / "shared"
        self.shared.mkdir(parents=True)

    def build(self) -> None:
        import torch

        from glocon.bank.build import build_bank
        from glocon.bank.config import BankConfig
        from glocon.models.prior import PriorArch, PriorExtractor, save_export
        from layout_fixtures import make_hostile_images
        from shard_writer import write_embedded_shards

        s = self.shared
        self.train = write_embedded_shards(s, "train", 24, size=64, per_shard=8)  # 3 shards
        self.val = write_embedded_shards(s, "val", 24, size=64, per_shard=8)
        torch.manual_seed(0)
        self.prior = s / "prior.pt"  # 512-d prior_features (resnet18, random init: the shape is what matters)
        save_export(PriorExtractor(PriorArch(backbone="resnet18", output_stride=16)), self.prior)
        self.prior128 = s / "prior-128.pt"  # a prior of another embedding size (its local head)
        save_export(PriorExtractor(PriorArch(backbone="resnet18", output_stride=16, prior_source="local_head")), self.prior128)
        self.hostile = make_hostile_images(s / "hostile")
        self.bank = s / "bank"
        with quiet():
            build_bank(BankConfig(prior=str(self.prior), shards=str(self.train), out=str(self.bank), workers=0, device="cpu"))
        # a first evaluation draws the episode files every few-shot case reuses (as a user's earlier run would)
        self.fewshot_yaml = s / "fewshot-proto.yaml"
        self.fewshot_yaml.write_text(fewshot_config(self, "proto", s / "episodes", s / "eval-proto"))
        run = subprocess.run([*job("fewshot"), "eval", "--config", str(self.fewshot_yaml)], cwd=s, env=child_env(s / "store"),
                             capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(f"setup: the first proto evaluation failed:\n{run.stderr[-3000:]}")
        self.episodes = s / "episodes"
        self.episode_file = next(self.episodes.glob("*.json"))


class quiet:
    """Silence stdout / stderr of in-process fixture building (its progress bars)."""

    def __enter__(self):
        self._out, self._err = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = io.StringIO()

    def __exit__(self, *exc):
        sys.stdout, sys.stderr = self._out, self._err


def fewshot_config(w: World, plugin: str, episodes: Path, out: Path, shards: Path | None = None, val: Path | None = None,
                   storage: Path | None = None) -> str:
    model = "{}" if plugin == "proto" else "{backbone: resnet18, dilated: false, reduce_dim: 16, prior_conv_dim: 16, prior_output_stride: 16}"
    return f"""plugin: {plugin}
prior: {w.prior}
model: {model}
data: {{shards: {shards or w.train}, benchmark: embedded, folds: [0]}}
image_size: 64
device: cpu
episodes_dir: {episodes}
fit: {{steps: 2, shots: [1], storage_path: {storage or 'runs/fewshot'}, name: fit, checkpoint_every: 2, val_fraction: 0.0, cache: {{enabled: false}}}}
eval: {{shards: {val or w.val}, episodes: 3, seeds: 1, shots: [1], n_figure_episodes: 0, bootstrap: 0, batch_size: 1, out_dir: {out}}}
"""


def copy_shards(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def first_shard(folder: Path) -> Path:
    return sorted(folder.glob("*.tar"))[0]


def flip_bytes(shard: Path) -> None:
    """16 bytes inside the first sample's image, the tar's size and headers unchanged."""
    from glocon.data.shardindex import scan_tar

    members = next(iter(scan_tar(shard).values()))
    offset, size = members["jpg"]
    with open(shard, "r+b") as fh:
        fh.seek(offset + size // 2)
        data = fh.read(16)
        fh.seek(offset + size // 2)
        fh.write(bytes(b ^ 0x5A for b in data))


def edit_manifest(folder: Path, edit: Callable[[dict], None]) -> None:
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def dotdot_member(shard: Path) -> None:
    """Replace the shard by a tar whose one member is named ``../x``."""
    with tarfile.open(shard, "w") as tf:
        info = tarfile.TarInfo("../x")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"{}"))


class _System:
    """Unpickling this calls ``os.system`` (what an attacker's checkpoint does)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def pickle_payload(path: Path, marker: Path, payload: dict | None = None) -> Path:
    """A real torch file (zip + data.pkl) whose pickle runs ``touch marker`` when loaded unsafely."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**(payload or {}), "note": _System(f"touch {marker}")}, path)
    return path


def billion_laughs() -> str:
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


def photos(d: Path, w: World, *names: str) -> Path:
    """``d/photos``: the good 64 x 48 JPEG plus the named hostile images of layout_fixtures."""
    folder = d / "photos"
    folder.mkdir()
    shutil.copy(w.hostile["zero_byte"].parent / "good.jpg", folder / "good.jpg")
    for n in names:
        shutil.copy(w.hostile[n], folder / w.hostile[n].name)
    return folder


def prebuild(overrides: list[str]) -> None:
    """Run make_shards' shard tasks here (``build_shard``, what each Ray task runs), so that the job
    finds every shard done and starts no Ray. A layout that refuses to open is left to the job."""
    from glocon.config import load_config
    from glocon.data.layouts import open_layout_classes
    from glocon.data.shardplan import BuildSpec, ShardsConfig, plan_shards
    from glocon.data.shards import resolve_paths
    from glocon.data.shardtask import build_shard
    from glocon.errors import GloconError

    cfg = resolve_paths(load_config(ShardsConfig, None, overrides))
    try:
        records, _ = open_layout_classes(cfg.data)
    except GloconError:
        return
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    for plan in plan_shards(records, cfg)[0]:
        build_shard(plan, cfg.out_dir, BuildSpec.from_config(cfg))


def strict_shards(d: Path, data: list[str], culprit: str, also: tuple[str, ...] = ()) -> Plan:
    """make_shards strict=true over ``data`` overrides, its shard tasks run here first."""
    overrides = [*data, f"out_dir={d / 'shards'}", *SHARDS_SMALL, "strict=true"]
    with quiet():
        prebuild(overrides)
    return Plan([*job("make_shards"), *overrides], culprit, also)


def shards_cmd(d: Path, data: list[str], *more: str) -> list[str]:
    return [*CLI, "shards", *data, f"out_dir={d / 'shards'}", *SHARDS_SMALL, *more]


def in_process_shard_set(folder: Path, out: Path, **kw) -> None:
    """A finished shard set (manifest and all) of a photo folder, made in this process (no Ray)."""
    from glocon.data.layouts import LayoutConfig
    from glocon.data.shardplan import ShardsConfig
    from inprocess_shards import make_shards_in_process

    cfg = ShardsConfig(data=LayoutConfig(layout="folder", root=str(folder)), out_dir=str(out), samples_per_shard=2,
                       longest_side=32, superpixels={"slic": {"n_segments": 8}}, **kw)
    with quiet():
        make_shards_in_process(cfg)


# ---------------------------------------------------------------- shards: folder layout, bad images
@case("shards", "folder")
def folder_truncated_jpeg(d, w):
    return strict_shards(d, ["data.layout=folder", f"data.root={photos(d, w, 'truncated_jpeg')}"], "truncated.jpg")


@case("shards", "folder")
def folder_jpeg_cut_in_its_header(d, w):
    return strict_shards(d, ["data.layout=folder", f"data.root={photos(d, w, 'truncated_jpeg_header')}"], "truncated_header.jpg")


@case("shards", "folder")
def folder_zero_byte_image(d, w):
    return strict_shards(d, ["data.layout=folder", f"data.root={photos(d, w, 'zero_byte')}"], "zero.jpg")


@case("shards", "folder")
def folder_text_saved_as_png(d, w):
    return strict_shards(d, ["data.layout=folder", f"data.root={photos(d, w, 'text_as_png')}"], "text.png")


@case("shards", "folder")
def folder_one_by_one_image(d, w):
    return strict_shards(d, ["data.layout=folder", f"data.root={photos(d, w, 'one_by_one')}"], "one.png")


@case("shards", "folder")
def folder_strip_10x20000(d, w):
    from PIL import Image

    folder = photos(d, w)
    Image.new("RGB", (10, 20000), (90, 120, 30)).save(folder / "strip.png")
    return strict_shards(d, ["data.layout=folder", f"data.root={folder}"], "strip.png", also=("min_side",))


@case("shards", "folder")
def folder_decompression_bomb_png(d, w):
    return strict_shards(d, ["data.layout=folder", f"data.root={photos(d, w, 'bomb')}"], "bomb.png")


@case("shards", "folder")
def folder_every_image_unreadable_ray(d, w):
    folder = d / "photos"
    folder.mkdir()
    for n in ("truncated_jpeg", "zero_byte", "text_as_png", "bomb"):
        shutil.copy(w.hostile[n], folder / w.hostile[n].name)
    tmp = ray_tmp(d)
    return Plan(shards_cmd(d, ["data.layout=folder", f"data.root={folder}"], f"ray.temp_dir={tmp}", "ray.num_cpus=2",
                           "ray.include_dashboard=false"),
                "all 4 inputs were rejected", also=("truncated.jpg", "zero.jpg", "text.png", "bomb.png"), ray=True)


@case("shards", "folder")
def folder_strict_truncated_jpeg_in_ray(d, w):
    tmp = ray_tmp(d)
    return Plan(shards_cmd(d, ["data.layout=folder", f"data.root={photos(d, w, 'truncated_jpeg')}"], "strict=true",
                           f"ray.temp_dir={tmp}", "ray.num_cpus=2", "ray.include_dashboard=false"),
                "truncated.jpg", ray=True)


@case("shards", "folder")
def folder_empty(d, w):
    empty = d / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no images here\n")
    return Plan(shards_cmd(d, ["data.layout=folder", f"data.root={empty}"]), "/empty holds no images")


@case("shards", "folder")
def folder_root_missing(d, w):
    return Plan(shards_cmd(d, ["data.layout=folder", f"data.root={d / 'nowhere'}"]), "nowhere")


# ---------------------------------------------------------------- shards: voc
def _voc(d: Path) -> Path:
    from layout_fixtures import make_voc

    return make_voc(d / "pascal", n=2)


VOC_MASK = "VOCdevkit/VOC2012/SegmentationClass/2007_000001.png"


@case("shards", "voc")
def voc_mask_of_the_wrong_size(d, w):
    from PIL import Image

    root = _voc(d)
    png = root / VOC_MASK
    Image.open(png).resize((32, 24), Image.NEAREST).save(png)
    return strict_shards(d, ["data.layout=voc", f"data.root={root}", "data.split=train"], "2007_000001.png", also=("32x24",))


@case("shards", "voc")
def voc_mask_with_class_ids_out_of_range(d, w):
    import numpy as np
    from PIL import Image

    root = _voc(d)
    png = root / VOC_MASK
    im = Image.open(png)
    a = np.array(im)
    a[0, 0], a[0, 1] = 37, 200
    bad = Image.fromarray(a, "P")
    bad.putpalette(im.getpalette())
    bad.save(png)
    return strict_shards(d, ["data.layout=voc", f"data.root={root}", "data.split=train"], "2007_000001.png", also=("37",))


@case("shards", "voc")
def voc_list_naming_a_missing_id(d, w):
    root = _voc(d)
    with open(root / "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt", "a") as fh:
        fh.write("2007_009999\n")
    return Plan(shards_cmd(d, ["data.layout=voc", f"data.root={root}", "data.split=train"]), "2007_009999", also=("train.txt",))


@case("shards", "voc")
def voc_split_list_missing(d, w):
    root = _voc(d)
    return Plan(shards_cmd(d, ["data.layout=voc", f"data.root={root}", "data.split=test"]), "split 'test'")


@case("shards", "voc")
def voc_sbd_list_missing(d, w):
    root = _voc(d)
    return Plan(shards_cmd(d, ["data.layout=voc", f"data.root={root}", "data.split=trainaug", f"data.voc_sbd_list={d / 'sbd.txt'}"]),
                "sbd.txt")


# ---------------------------------------------------------------- shards: coco
@case("shards", "coco")
def coco_json_with_an_unknown_category(d, w):
    from layout_fixtures import make_coco_instances

    root = make_coco_instances(d / "coco", missing_category=True)
    return Plan(shards_cmd(d, ["data.layout=coco", f"data.root={root}", "data.split=val2017"]), "999",
                also=("instances_val2017.json",))


@case("shards", "coco")
def coco_json_truncated(d, w):
    from layout_fixtures import make_coco_instances

    root = make_coco_instances(d / "coco")
    path = root / "annotations" / "instances_val2017.json"
    path.write_bytes(path.read_bytes()[:2000])
    return Plan(shards_cmd(d, ["data.layout=coco", f"data.root={root}", "data.split=val2017"]), "instances_val2017.json")


@case("shards", "coco")
def coco_annotations_of_another_split(d, w):
    from layout_fixtures import make_coco_instances

    root = make_coco_instances(d / "coco")
    return Plan(shards_cmd(d, ["data.layout=coco", f"data.root={root}", "data.split=train2017"]), "train2017")


@case("shards", "coco")
def coco_panoptic_png_missing(d, w):
    from layout_fixtures import make_coco_panoptic

    root = make_coco_panoptic(d / "coco")
    (root / "annotations" / "panoptic_val2017" / "000000000001.png").unlink()
    return strict_shards(d, ["data.layout=coco", f"data.root={root}", "data.split=val2017", "data.coco_format=panoptic"],
                         "000000000001.png")


@case("shards", "coco")
def coco_semantic_png_mask_of_the_wrong_size(d, w):
    from PIL import Image

    from layout_fixtures import make_coco_semantic

    root = make_coco_semantic(d / "coco128")
    png = root / "semantic_segmentation" / "masks" / "val2017" / "000000000002.png"
    Image.open(png).resize((20, 10), Image.NEAREST).save(png)
    return strict_shards(d, ["data.layout=coco", f"data.root={root}", "data.split=val2017", "data.coco_format=semantic_png"],
                         "000000000002.png")


# ---------------------------------------------------------------- shards: fss
def _fss(d: Path) -> tuple[Path, Path]:
    from layout_fixtures import make_fss

    return make_fss(d / "fss")


@case("shards", "fss")
def fss_split_list_naming_a_missing_class(d, w):
    data, splits = _fss(d)
    with open(splits / "test.txt", "a") as fh:
        fh.write("zebra\n")
    return Plan(shards_cmd(d, ["data.layout=fss", f"data.root={data}", "data.split=test", f"data.fss_split_dir={splits}"]), "zebra")


@case("shards", "fss")
def fss_mask_missing(d, w):
    data, splits = _fss(d)
    (data / "goose" / "1.png").unlink()
    return strict_shards(d, ["data.layout=fss", f"data.root={data}", "data.split=test", f"data.fss_split_dir={splits}"], "goose/1")


@case("shards", "fss")
def fss_split_dir_missing(d, w):
    data, _ = _fss(d)
    return Plan(shards_cmd(d, ["data.layout=fss", f"data.root={data}", "data.split=test", f"data.fss_split_dir={d / 'splits-gone'}"]),
                "splits-gone")


# ---------------------------------------------------------------- shards: semantic (CamVid-style)
def _semantic(d: Path) -> Path:
    from layout_fixtures import make_semantic

    return make_semantic(d / "camvid")


@case("shards", "semantic")
def semantic_class_names_billion_laughs(d, w):
    root = _semantic(d)
    (root / "classes.yaml").write_text(billion_laughs())
    return Plan(shards_cmd(d, ["data.layout=semantic", f"data.root={root}", "data.class_names=classes.yaml"]), "classes.yaml")


@case("shards", "semantic")
def semantic_mask_with_an_undeclared_id(d, w):
    root = _semantic(d)  # the masks hold void id 30, which data.void_ids does not name here
    return strict_shards(d, ["data.layout=semantic", f"data.root={root}", "data.class_names=classes.yaml"], "masks/frame000.png",
                         also=("30",))


@case("shards", "semantic")
def semantic_class_names_file_missing(d, w):
    root = _semantic(d)
    return Plan(shards_cmd(d, ["data.layout=semantic", f"data.root={root}", "data.class_names=names.yaml"]), "names.yaml")


@case("shards", "semantic")
def semantic_class_names_not_a_mapping(d, w):
    root = _semantic(d)
    (root / "classes.yaml").write_text("just a sentence, not class names\n")
    return Plan(shards_cmd(d, ["data.layout=semantic", f"data.root={root}", "data.class_names=classes.yaml", "data.void_ids=[30]"]),
                "classes.yaml")


@case("shards", "semantic")
def semantic_image_without_its_mask(d, w):
    root = _semantic(d)
    (root / "masks" / "frame001.png").unlink()
    return strict_shards(d, ["data.layout=semantic", f"data.root={root}", "data.class_names=classes.yaml", "data.void_ids=[30]"],
                         "frame001")


@case("shards", "semantic")
def camvid_mask_id_beyond_its_names(d, w):
    import numpy as np
    from PIL import Image

    from layout_fixtures import make_camvid

    root = make_camvid(d / "CamVid")
    png = sorted((root / "trainannot").glob("*.png"))[0]
    a = np.array(Image.open(png))
    a[5:9, 5:9] = 40  # classes.txt names ids 0..11
    Image.fromarray(a, "L").save(png)
    return strict_shards(d, ["data.layout=semantic", f"data.root={root}", "data.image_dir=train", "data.mask_dir=trainannot",
                             "data.class_names=classes.txt", "data.background_id=null", "data.void_ids=[11]"], png.name, also=("40",))


# ---------------------------------------------------------------- shards: embedded, configs, out_dir
@case("shards", "embedded")
def embedded_size_zero(d, w):
    return Plan(shards_cmd(d, ["data.layout=embedded", "data.embedded.size=0"]), "data.embedded.size")


@case("shards", "embedded")
def embedded_negative_image_count(d, w):
    return Plan(shards_cmd(d, ["data.layout=embedded", "data.embedded.n_images=-5"]), "embedded.n_images")


@case("shards", "config")
def config_billion_laughs(d, w):
    (d / "bomb.yaml").write_text(billion_laughs())
    return Plan([*job("make_shards"), "--config", str(d / "bomb.yaml")], "bomb.yaml")


@case("shards", "config")
def config_unknown_key(d, w):
    return Plan(shards_cmd(d, ["data.layout=embedded", "longest_sid=64"]), "longest_sid")


@case("shards", "config")
def config_wrong_type(d, w):
    return Plan([*CLI, "shards", "samples_per_shard=many"], "samples_per_shard")


@case("shards", "config")
def config_file_missing(d, w):
    return Plan([*job("make_shards"), "--config", str(d / "nope.yaml")], "nope.yaml")


@case("shards", "config")
def config_yaml_syntax_error(d, w):
    (d / "broken.yaml").write_text("data: {layout: folder, root: [photos\nlongest_side: 64\n")
    return Plan([*job("make_shards"), "--config", str(d / "broken.yaml")], "broken.yaml")


@case("shards", "config")
def config_that_is_a_list(d, w):
    (d / "list.yaml").write_text("- longest_side: 64\n- samples_per_shard: 8\n")
    return Plan([*job("make_shards"), "--config", str(d / "list.yaml")], "list.yaml")


@case("shards", "config")
def config_nested_too_deep(d, w):
    (d / "deep.yaml").write_text("data: " + "[" * 200 + "]" * 200 + "\n")
    return Plan([*job("make_shards"), "--config", str(d / "deep.yaml")], "deep.yaml")


@case("shards", "config")
def config_negative_longest_side(d, w):
    return Plan([*CLI, "shards", "data.layout=embedded", f"out_dir={d / 'shards'}", "longest_side=-64"], "longest_side")


@case("shards", "config")
def config_prefix_escaping_the_folder(d, w):
    return Plan(shards_cmd(d, ["data.layout=embedded"], "prefix=../evil"), "prefix")


@case("shards", "config")
def config_unknown_layout(d, w):
    return Plan(shards_cmd(d, ["data.layout=pascal"]), "data.layout")


@case("shards", "folder")
def out_dir_is_a_file(d, w):
    (d / "taken").write_text("my notes\n")
    return Plan([*CLI, "shards", "data.layout=folder", f"data.root={photos(d, w)}", f"out_dir={d / 'taken'}"], "out_dir")


@case("shards", "folder")
def out_dir_below_a_file(d, w):
    (d / "taken").write_text("my notes\n")
    return Plan([*CLI, "shards", "data.layout=folder", f"data.root={photos(d, w)}", f"out_dir={d / 'taken' / 'shards'}"], "taken")


@case("shards", "folder")
def out_dir_holding_another_configuration(d, w):
    first = photos(d, w, "cmyk_jpeg", "png16", "palette")
    in_process_shard_set(first, d / "shards")  # a finished set of 4 samples
    other = d / "other"
    other.mkdir()
    shutil.copy(w.hostile["gray"], other / "gray.png")
    return Plan([*job("make_shards"), "data.layout=folder", f"data.root={other}", f"out_dir={d / 'shards'}",
                 "samples_per_shard=2", "longest_side=32", "superpixels.slic.n_segments=8"], "out_dir", also=("data.root",))


@case("shards", "folder")
def overwrite_a_folder_holding_user_files(d, w):
    first = photos(d, w, "cmyk_jpeg")
    in_process_shard_set(first, d / "shards")
    (d / "shards" / "notes.txt").write_text("mine\n")
    return Plan([*job("make_shards"), "data.layout=folder", f"data.root={first}", f"out_dir={d / 'shards'}",
                 "samples_per_shard=2", "longest_side=16", "superpixels.slic.n_segments=8", "overwrite=true"], "notes.txt")


# ---------------------------------------------------------------- pretrain
def pretrain_yaml(d: Path, shards: Path) -> Path:
    from tiny_configs import TINY

    path = d / "pretrain.yaml"
    path.write_text(TINY["pretrain-demo.yaml"].replace("runs/demo/shards", str(shards)) + "ray: {include_dashboard: false}\n")
    return path


def pretrain(d: Path, w: World, *overrides: str, shards: Path | None = None) -> list[str]:
    return [*job("pretrain"), "--config", str(pretrain_yaml(d, shards or w.train)), *overrides]


@case("pretrain")
def pretrain_unknown_key(d, w):
    return Plan(pretrain(d, w, "loss.taux=0.1"), "loss.taux")


@case("pretrain")
def pretrain_negative_batch_size(d, w):
    return Plan(pretrain(d, w, "batch_size=-8"), "batch_size")


@case("pretrain")
def pretrain_negative_tau(d, w):
    return Plan(pretrain(d, w, "loss.tau=-0.07"), "loss.tau")


@case("pretrain")
def pretrain_negative_image_size(d, w):
    return Plan(pretrain(d, w, "data.image_size=-1"), "data.image_size")


@case("pretrain")
def pretrain_shards_missing(d, w):
    return Plan(pretrain(d, w, shards=d / "no-shards"), "data.shards")


@case("pretrain", "shards")
def pretrain_shard_with_flipped_bytes(d, w):
    shards = copy_shards(w.train, d / "shards")
    flip_bytes(first_shard(shards))
    return Plan(pretrain(d, w, shards=shards), first_shard(shards).name)


@case("pretrain", "shards")
def pretrain_manifest_with_a_wrong_sha(d, w):
    shards = copy_shards(w.train, d / "shards")
    edit_manifest(shards, lambda m: m["shards"][1].__setitem__("sha256", "0" * 64))
    return Plan(pretrain(d, w, shards=shards), sorted(shards.glob("*.tar"))[1].name)


@case("pretrain", "shards")
def pretrain_tar_member_dotdot(d, w):
    shards = copy_shards(w.train, d / "shards")
    dotdot_member(first_shard(shards))
    return Plan(pretrain(d, w, shards=shards), first_shard(shards).name)


@case("pretrain", "shards")
def pretrain_truncated_shard(d, w):
    shards = copy_shards(w.train, d / "shards")
    tar = sorted(shards.glob("*.tar"))[2]
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    return Plan(pretrain(d, w, shards=shards), tar.name)


@case("pretrain", "shards")
def pretrain_manifest_class_index_edited(d, w):
    shards = copy_shards(w.train, d / "shards")
    edit_manifest(shards, lambda m: m["classes"].__setitem__("1", m["classes"]["2"]))
    return Plan(pretrain(d, w, shards=shards), "classes.1")


@case("pretrain", "shards")
def pretrain_manifest_not_json(d, w):
    shards = copy_shards(w.train, d / "shards")
    (shards / "manifest.json").write_text('{"shards": [oops\n')
    return Plan(pretrain(d, w, shards=shards), "manifest.json")


@case("pretrain")
def pretrain_more_ranks_than_shards(d, w):
    return Plan(pretrain(d, w, "num_workers=4", "batch_size=8"), "num_workers")


@case("pretrain")
def pretrain_storage_path_is_a_file(d, w):
    (d / "runs").write_text("not a folder\n")
    return Plan(pretrain(d, w, f"storage_path={d / 'runs'}"), "storage_path")


# ---------------------------------------------------------------- sweep
def sweep(d: Path, w: World, *overrides: str) -> list[str]:
    from tiny_configs import TINY

    pre = pretrain_yaml(d, w.train)
    path = d / "sweep.yaml"
    path.write_text(TINY["sweep-demo.yaml"].replace("configs/pretrain-demo.yaml", str(pre)).replace("runs/demo/shards", str(w.train))
                    .replace("storage_path: runs/sweeps", f"storage_path: {d / 'runs'}"))
    return [*job("sweep"), "--config", str(path), *overrides]


@case("sweep")
def sweep_negative_tau_in_the_space(d, w):
    return Plan(sweep(d, w, "space.tau=[0.2, -0.07]"), "space.tau")


@case("sweep")
def sweep_base_config_missing(d, w):
    return Plan(sweep(d, w, f"pretrain={d / 'gone.yaml'}"), "gone.yaml")


@case("sweep")
def sweep_override_typo(d, w):
    return Plan(sweep(d, w, "pretrain_overrides=['loss.taux=0.1']"), "loss.taux")


@case("sweep", "shards")
def sweep_objective_shard_with_flipped_bytes(d, w):
    shards = copy_shards(w.train, d / "shards")
    flip_bytes(first_shard(shards))
    return Plan(sweep(d, w, f"objective.config.data.shards={shards}"), first_shard(shards).name)


# ---------------------------------------------------------------- bank build / query / stats
def bank_yaml(d: Path, w: World, shards: Path | None = None, out: Path | None = None) -> Path:
    path = d / "bank.yaml"
    path.write_text(f"prior: {w.prior}\nshards: {shards or w.train}\nout: {out or d / 'bank'}\ndevice: cpu\nworkers: 0\n"
                    "query: {k: 4, tile: 64, columns: 4}\nstats: {k: 3, queries: 20, per_class: 2}\n")
    return path


def bank_copy(d: Path, w: World) -> Path:
    bank = d / "bank"
    shutil.copytree(w.bank, bank)
    return bank


@case("bank build")
def bank_prior_is_a_pickle_calling_os_system(d, w):
    marker = d / "pwned"
    prior = pickle_payload(d / "prior.pt", marker, {"format": "glocon.prior_extractor/v1", "arch": {"backbone": "resnet18"}, "state_dict": {}})
    return Plan([*CLI, "bank", "build", "--config", str(bank_yaml(d, w)), f"prior={prior}"], "prior.pt", must_not_exist=(marker,))


@case("bank build")
def bank_prior_is_text(d, w):
    (d / "prior.pt").write_text("<html>404</html>\n")
    return Plan([*CLI, "bank", "build", "--config", str(bank_yaml(d, w)), f"prior={d / 'prior.pt'}"], "prior.pt")


@case("bank build")
def bank_prior_missing(d, w):
    return Plan([*CLI, "bank", "build", "--config", str(bank_yaml(d, w)), f"prior={d / 'gone.pt'}"], "prior")


@case("bank build")
def bank_negative_input_size(d, w):
    return Plan([*CLI, "bank", "build", "--config", str(bank_yaml(d, w)), "input_size=-1"], "input_size")


@case("bank build")
def bank_negative_workers(d, w):
    return Plan([*CLI, "bank", "build", "--config", str(bank_yaml(d, w)), "workers=-2"], "workers")


@case("bank build", "shards")
def bank_shard_with_flipped_bytes(d, w):
    shards = copy_shards(w.train, d / "shards")
    flip_bytes(first_shard(shards))
    return Plan([*job("build_bank"), "--config", str(bank_yaml(d, w, shards))], first_shard(shards).name)


@case("bank build")
def bank_class_names_billion_laughs(d, w):
    (d / "names.yaml").write_text(billion_laughs())
    return Plan([*job("build_bank"), "--config", str(bank_yaml(d, w)), f"class_names={d / 'names.yaml'}"], "names.yaml")


@case("bank build")
def bank_out_is_a_file(d, w):
    (d / "bank").write_text("not a folder\n")
    return Plan([*job("build_bank"), "--config", str(bank_yaml(d, w))], "out")


@case("bank stats")
def bank_vectors_of_object_dtype(d, w):
    import numpy as np

    bank = bank_copy(d, w)
    n, dim = np.load(bank / "vectors.npy", mmap_mode="r").shape
    np.save(bank / "vectors.npy", np.full((n, dim), None, dtype=object), allow_pickle=True)
    return Plan([*job("query_bank"), "stats", "--config", str(bank_yaml(d, w))], "vectors.npy")


@case("bank query")
def bank_query_key_not_in_the_bank(d, w):
    bank_copy(d, w)
    return Plan([*CLI, "bank", "query", "--config", str(bank_yaml(d, w)), "key=embedded/999999", "superpixel=0"],
                "embedded/999999")


@case("bank query")
def bank_query_point_outside_the_image(d, w):
    bank_copy(d, w)
    return Plan([*CLI, "bank", "query", "--config", str(bank_yaml(d, w)), "key=embedded/000001", "point=[500,900]"], "point")


@case("bank query")
def bank_query_with_a_prior_of_another_size(d, w):
    bank_copy(d, w)
    return Plan([*CLI, "bank", "query", "--config", str(bank_yaml(d, w)), "key=embedded/000001", "superpixel=0",
                 f"prior={w.prior128}", "allow_other_prior=true"], "prior-128.pt")


@case("bank query")
def bank_query_index_truncated(d, w):
    bank = bank_copy(d, w)
    index = bank / "index.faiss"
    index.write_bytes(index.read_bytes()[:100])
    return Plan([*CLI, "bank", "query", "--config", str(bank_yaml(d, w)), "key=embedded/000001", "superpixel=0"], "index.faiss")


@case("bank query")
def bank_query_bank_missing(d, w):
    return Plan([*CLI, "bank", "query", "--config", str(bank_yaml(d, w)), f"bank={d / 'no-bank'}", "key=embedded/000001",
                 "superpixel=0"], "no-bank")


@case("bank stats")
def bank_stats_manifest_not_json(d, w):
    bank = bank_copy(d, w)
    (bank / "manifest.json").write_text("{oops")
    return Plan([*CLI, "bank", "stats", "--config", str(bank_yaml(d, w))], "manifest.json")


@case("bank stats")
def bank_stats_k_zero(d, w):
    bank_copy(d, w)
    return Plan([*CLI, "bank", "stats", "--config", str(bank_yaml(d, w)), "k=0"], "k")


# ---------------------------------------------------------------- probe
def probe(d: Path, w: World, *overrides: str, prior: Path | None = None, val: Path | None = None) -> list[str]:
    path = d / "probe.yaml"
    path.write_text(f"priors: {{p: {prior or w.prior}}}\ntrain_shards: {w.train}\nval_shards: {val or w.val}\ninput_size: 64\n"
                    f"seeds: [0]\nlinear: {{epochs: 1}}\nprior_map: {{enabled: false}}\npurity: {{per_class: 2}}\nout: {d / 'probe'}\n")
    return [*job("probe"), "--config", str(path), *overrides]


@case("probe")
def probe_prior_is_a_pickle_calling_os_system(d, w):
    marker = d / "pwned"
    prior = pickle_payload(d / "prior.pt", marker, {"format": "glocon.prior_extractor/v1"})
    return Plan(probe(d, w, prior=prior), "prior.pt", must_not_exist=(marker,))


@case("probe")
def probe_epoch_checkpoint_is_a_pickle(d, w):
    marker = d / "pwned"
    run = d / "pretrain-run"
    epoch = run / "epochs" / "epoch-0001"  # what pretraining writes at the end of an epoch
    pickle_payload(epoch / "prior.pt", marker, {"format": "glocon.prior_extractor/v1"})
    (epoch / "metrics.json").write_text(json.dumps({"epoch": 1, "step": 3, "L_global": 2.1}))
    return Plan(probe(d, w, f"run={run}"), "epoch-0001", must_not_exist=(marker,))


@case("probe")
def probe_negative_batch_size(d, w):
    return Plan(probe(d, w, "batch_size=-2"), "batch_size")


@case("probe")
def probe_val_shards_missing(d, w):
    return Plan(probe(d, w, val=d / "gone"), "val_shards")


@case("probe", "shards")
def probe_val_shard_with_flipped_bytes(d, w):
    val = copy_shards(w.val, d / "val")
    flip_bytes(first_shard(val))
    return Plan(probe(d, w, val=val), first_shard(val).name)


# ---------------------------------------------------------------- fewshot
def fewshot(d: Path, w: World, verb: str, *overrides: str, plugin: str = "proto", shards: Path | None = None, val: Path | None = None,
            episodes: Path | None = None) -> list[str]:
    path = d / f"fewshot-{plugin}.yaml"
    path.write_text(fewshot_config(w, plugin, episodes or d / "episodes", d / "eval", shards, val, d / "runs"))
    return [*job("fewshot"), verb, "--plugin", plugin, "--config", str(path), *overrides]


def episodes_copy(d: Path, w: World) -> Path:
    folder = d / "episodes"
    shutil.copytree(w.episodes, folder)
    return folder / w.episode_file.name


def qgnet_model(d: Path, w: World, novel: list[int]) -> Path:
    """A qgnet model.pt as fit writes it (``save_model_file``), recording the split it was fitted on."""
    from glocon.config import load_config
    from glocon.fewshot.runner import FewShotConfig, build, model_path, save_model_file, trainable_state
    from glocon.plugins import load_plugin

    plugin = load_plugin("qgnet")
    path = d / "fewshot-qgnet.yaml"
    path.write_text(fewshot_config(w, "qgnet", d / "episodes", d / "eval", storage=d / "runs"))
    cfg = load_config(FewShotConfig, path)
    base = [c for c in range(1, 21) if c not in novel]
    out = model_path(cfg, 0, 1)
    with quiet():
        save_model_file(out, plugin, cfg, 0, 1, trainable_state(build(plugin, cfg)), {"step": 2},
                        {"benchmark": "embedded", "base": base, "novel": novel})
    return out


@case("fewshot eval")
def fewshot_eval_with_another_class_split(d, w):
    qgnet_model(d, w, novel=[1, 2, 3, 4, 5])  # fitted on fold 0's split
    return Plan(fewshot(d, w, "eval", "data.novel_classes=[6,7,8,9,10]", plugin="qgnet"), "model.pt", also=("novel classes",))


@case("fewshot eval")
def fewshot_model_is_a_pickle_calling_os_system(d, w):
    marker = d / "pwned"
    model = pickle_payload(d / "model.pt", marker, {"format": "glocon.fewshot_model/v1", "plugin": "qgnet", "fold": 0})
    return Plan(fewshot(d, w, "eval", f"eval.weights={model}", plugin="qgnet"), "model.pt", must_not_exist=(marker,))


@case("fewshot eval")
def fewshot_prior_is_a_pickle_calling_os_system(d, w):
    marker = d / "pwned"
    prior = pickle_payload(d / "prior.pt", marker, {"format": "glocon.prior_extractor/v1"})
    return Plan(fewshot(d, w, "eval", f"prior={prior}"), "prior.pt", must_not_exist=(marker,))


@case("fewshot eval", "episodes")
def fewshot_episode_file_header_edited(d, w):
    path = episodes_copy(d, w)
    data = json.loads(path.read_text())
    data["header"]["classes"] = [c for c in data["header"]["classes"] if c != data["episodes"][0]["class"]]
    path.write_text(json.dumps(data, indent=1))
    return Plan(fewshot(d, w, "eval"), path.name)


@case("fewshot eval", "episodes")
def fewshot_episode_naming_a_missing_image(d, w):
    path = episodes_copy(d, w)
    data = json.loads(path.read_text())
    data["episodes"][0]["query"] = "embedded-val/999999"
    path.write_text(json.dumps(data, indent=1))
    return Plan(fewshot(d, w, "eval"), path.name, also=("embedded-val/999999",))


@case("fewshot eval", "episodes")
def fewshot_episode_file_not_json(d, w):
    path = episodes_copy(d, w)
    path.write_text(path.read_text()[:150])
    return Plan(fewshot(d, w, "eval"), path.name)


@case("fewshot eval", "shards")
def fewshot_manifest_class_index_edited(d, w):
    val = copy_shards(w.val, d / "val")
    edit_manifest(val, lambda m: m["classes"].__setitem__("1", m["classes"]["2"]))
    return Plan(fewshot(d, w, "eval", val=val), "classes.1")


@case("fewshot eval", "shards")
def fewshot_eval_shard_with_flipped_bytes(d, w):
    val = copy_shards(w.val, d / "val")
    flip_bytes(first_shard(val))
    return Plan(fewshot(d, w, "eval", val=val), first_shard(val).name)


@case("fewshot fit", "shards")
def fewshot_fit_shard_with_flipped_bytes(d, w):
    shards = copy_shards(w.train, d / "shards")
    flip_bytes(first_shard(shards))
    return Plan(fewshot(d, w, "fit", plugin="qgnet", shards=shards), first_shard(shards).name)


@case("fewshot fit")
def fewshot_fit_negative_batch_size(d, w):
    return Plan(fewshot(d, w, "fit", "fit.batch_size=-4", plugin="qgnet"), "fit.batch_size")


@case("fewshot eval")
def fewshot_negative_image_size(d, w):
    return Plan(fewshot(d, w, "eval", "image_size=-1"), "image_size")


@case("fewshot eval")
def fewshot_unknown_plugin(d, w):
    return Plan(fewshot(d, w, "eval", plugin="nosuchplugin"), "nosuchplugin")


@case("fewshot eval")
def fewshot_model_key_typo(d, w):
    return Plan(fewshot(d, w, "eval", "model.treshold=0.4"), "treshold")


@case("fewshot eval")
def fewshot_weights_missing(d, w):
    return Plan(fewshot(d, w, "eval", f"eval.weights={d / 'gone.pt'}", plugin="qgnet"), "eval.weights")


@case("fewshot compare")
def fewshot_compare_folders_missing(d, w):
    return Plan([*CLI, "fewshot", "compare", str(d / "eval-a"), str(w.shared / "eval-proto")], "eval-a")


# ---------------------------------------------------------------- explore, demo, show, store
@case("explore")
def explore_port_out_of_range(d, w):
    return Plan([*job("explore"), f"shards.train={w.train}", "port=70000"], "port")


@case("demo")
def demo_unknown_key(d, w):
    return Plan([*CLI, "demo", "foldz=[0]", f"out={d / 'demo'}"], "foldz")


@case("show", "shards")
def show_key_not_in_the_shards(d, w):
    return Plan([*CLI, "show", "superpixels", "--shards", str(w.train), "--key", "embedded/999999", "--out", str(d / "f.png")],
                "embedded/999999")


@case("show", "shards")
def show_shard_with_flipped_bytes(d, w):
    shards = copy_shards(w.train, d / "shards")
    flip_bytes(first_shard(shards))
    key = json.loads((shards / "manifest.json").read_text())["shards"][0]["keys"][0]
    return Plan([*CLI, "show", "superpixels", "--shards", str(shards), "--key", key, "--out", str(d / "f.png")], first_shard(shards).name)


def store_copy(d: Path, w: World) -> Path:
    store = d / "store"
    shutil.copytree(w.shared / "store", store)
    return store


@case("store")
def store_prune_negative_size(d, w):
    store = store_copy(d, w)
    return Plan([*CLI, "store", "prune", "--root", str(store), "--max-gb", "-1"], "max-gb")


@case("store")
def store_namespace_meta_not_json(d, w):
    store = store_copy(d, w)
    meta = sorted(store.rglob("meta.json"))[0]
    meta.write_text("{oops")
    return Plan([*CLI, "store", "ls", "--root", str(store)], "meta.json")


# ---------------------------------------------------------------------------------------------
# running one case
# ---------------------------------------------------------------------------------------------
def ray_tmp(d: Path) -> str:
    """A short Ray temp folder (AF_UNIX socket paths are limited to ~107 bytes), removed after the case."""
    return tempfile.mkdtemp(prefix="ghr-", dir="/tmp")


def child_env(store: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}  # never join another Ray
    env.update(GLOCON_STORE=str(store), PYTHONUNBUFFERED="1")
    return env


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def snapshot(*folders: Path) -> dict[Path, str]:
    out = {}
    for folder in folders:
        for p in folder.rglob("*"):
            if p.is_file() and not p.is_symlink():
                out[p] = sha256(p)
    return out


def _proc_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (ppid, session id, rss pages) of every process."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            table[int(entry.name)] = (int(fields[1]), int(fields[3]), int(fields[21]))
        except (OSError, IndexError, ValueError):
            continue
    return table


def tree_rss_bytes(root: int) -> int:
    """Summed RSS of ``root``, its descendants and whatever else runs in its session."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    seen, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, []))
    seen |= {pid for pid, (_, sid, _) in table.items() if sid == root}
    page = os.sysconf("SC_PAGE_SIZE")
    return sum(table[p][2] for p in seen if p in table) * page


def _unrooted(line: str, d: Path, root: Path) -> str:
    """``line`` with the case's folder and the bench's root shortened, so that a culprit is never
    found in a folder name the bench chose (a case named ..._point_... names no point)."""
    return line.replace(str(d), "<case>").replace(str(root), "<root>")


def _time_rss_kb(path: Path) -> float:
    """GNU time's ``%M`` (peak RSS in KB), the last number in its output file (0 when killed before it wrote)."""
    try:
        numbers = [line for line in path.read_text().split() if line.isdigit()]
    except OSError:
        return 0.0
    return float(numbers[-1]) if numbers else 0.0


def session_pids(root: int) -> list[int]:
    return [pid for pid, (_, sid, _) in _proc_table().items() if sid == root and pid != os.getpid()]


def run_case(c: Case, w: World, cases_dir: Path, logs: Path) -> Result:
    d = (cases_dir / c.name).resolve()
    d.mkdir(parents=True)
    store = d / ".store"
    try:
        plan = c.prepare(d, w)
    except Exception as exc:  # a broken case is the bench's bug: show it, count it as not clear
        return Result(c, None, -1, 0.0, 0.0, [], False, False, [], last_line=f"setup failed: {type(exc).__name__}: {exc}")
    before = snapshot(d, w.shared)
    out_path, err_path, time_path = logs / f"{c.name}.out", logs / f"{c.name}.err", logs / f"{c.name}.time"
    peak = [0]
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        # GNU time measures the job's peak RSS from its own wait4: a child forked from this process
        # would inherit this process's high-water mark (ru_maxrss survives execve)
        argv = ["/usr/bin/time", "-f", "%M", "-o", str(time_path), *plan.argv]
        proc = subprocess.Popen(argv, cwd=d, env=child_env(store), stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        done = threading.Event()
        timed_out = threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                try:
                    peak[0] = max(peak[0], tree_rss_bytes(proc.pid))
                except OSError:
                    pass
                if time.perf_counter() - t0 > plan.timeout and not timed_out.is_set():
                    timed_out.set()
                    os.killpg(proc.pid, signal.SIGKILL)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, _ = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        done.set()
        sampler.join()
    for pid in session_pids(proc.pid):  # what the job left running in its session (its own Ray daemons)
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if plan.ray:
        for arg in plan.argv:
            if arg.startswith("ray.temp_dir="):
                shutil.rmtree(arg.split("=", 1)[1], ignore_errors=True)
    rss = _time_rss_kb(time_path) / 2**10  # the largest single process of the job (reaped children included)
    tree = peak[0] / 2**20
    stderr = err_path.read_text(errors="replace")
    stdout = out_path.read_text(errors="replace")
    error_lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    after = {p for p in before if p.is_file()}
    lost = sorted(str(p.relative_to(w.root)) for p, digest in before.items() if p not in after or sha256(p) != digest)
    lines = [line for line in stderr.splitlines() if line.strip()]
    return Result(
        c, plan, proc.returncode, seconds, rss, error_lines, tree_mb=tree,
        named=bool(error_lines) and plan.culprit in _unrooted(error_lines[0], d, w.root),
        traceback="Traceback (most recent call last)" in stderr + stdout,
        lost=lost,
        missing_also=[s for s in plan.also if s not in stderr],
        ran_code=[str(p) for p in plan.must_not_exist if p.exists()],
        timed_out=timed_out.is_set(),
        last_line=lines[-1] if lines else "",
    )


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def report(results: list[Result], wall: float) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200, highlight=False)
    table = Table(title=f"hostile inputs: {len(results)} cases, {wall:.0f} s", show_lines=False)
    for col in ("case", "job", "layout", "exit", "s", "MB", "tree MB", "clear", "error: lines", "named", "tb", "lost", "silent"):
        table.add_column(col, justify="right" if col in ("exit", "s", "MB", "tree MB") else "left")
    yes = lambda b: "yes" if b else "-"  # noqa: E731
    for r in results:
        table.add_row(r.case.name, r.case.job, r.case.layout, str(r.rc), f"{r.seconds:.1f}", f"{r.rss_mb:.0f}", f"{r.tree_mb:.0f}",
                      "[green]yes[/]" if r.clear else "[red]NO[/]", str(len(r.error_lines)), yes(r.named), yes(r.traceback),
                      "[red]yes[/]" if r.lost else "-", "[red]yes[/]" if r.silent else "-")
    console.print(table)
    failing = [r for r in results if not r.clear or r.lost or r.ran_code]
    if failing:
        console.print(f"\n{len(failing)} case(s) not clear, or losing data:")
    for r in failing:
        why = []
        if r.plan is None:
            why.append("setup failed")
        else:
            if r.rc not in (1, 2):
                why.append(f"exit {r.rc}")
            if len(r.error_lines) != 1:
                why.append(f"{len(r.error_lines)} error: lines")
            elif not r.named:
                why.append(f"error line lacks {r.plan.culprit!r}")
            if r.traceback:
                why.append("traceback")
            if r.missing_also:
                why.append(f"stderr lacks {r.missing_also}")
            if r.timed_out:
                why.append(f"killed after {r.plan.timeout} s")
        if r.lost:
            why.append(f"changed or removed: {r.lost[:3]}")
        if r.ran_code:
            why.append(f"a pickle payload ran: {r.ran_code}")
        first = r.error_lines[0] if r.error_lines else r.last_line
        console.print(f"  {r.case.name} ({'; '.join(why)}):\n      {first[:400]}", soft_wrap=True)
    print(f"bench wall {wall:.0f} s; cases that started Ray: {sum(1 for r in results if r.plan and r.plan.ray)}")
    print(f"peak RSS summed over a job's process tree: {max((r.tree_mb for r in results), default=0):.0f} MB")
    print(f"hostile_cases = {len(results)}")
    print(f"hostile_clear_errors = {sum(r.clear for r in results)}")
    print(f"hostile_silent = {sum(r.silent for r in results)}")
    print(f"hostile_data_lost = {sum(bool(r.lost) for r in results)}")
    print(f"hostile_max_rss_mb = {max((r.rss_mb for r in results), default=0):.0f}")
    print(f"hostile_max_s = {max((r.seconds for r in results), default=0):.1f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", action="append", default=[], help="run only the cases whose name holds this (repeatable)")
    ap.add_argument("--keep", default=None, help="keep every case's folder and logs here (default: a temp folder, removed)")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    args = ap.parse_args(argv)
    chosen = [c for c in CASES if not args.k or any(k in c.name for k in args.k)]
    if args.list:
        for c in chosen:
            print(f"{c.name:<50} {c.job:<16} {c.layout}")
        print(f"{len(chosen)} cases")
        return 0
    if args.keep:
        root = Path(args.keep).resolve()
        if root.exists() and any(root.iterdir()):
            sys.exit(f"--keep {root}: not empty (choose a new folder)")
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = Path(tempfile.mkdtemp(prefix="glocon-hostile-")).resolve()
    os.environ["GLOCON_STORE"] = str(root / "shared" / "store")  # the fixtures' own feature store (the bank fills it)
    t0 = time.perf_counter()
    try:
        world = World(root)
        world.build()
        setup = time.perf_counter() - t0
        print(f"fixtures in {root} ({setup:.0f} s); {len(chosen)} cases", flush=True)
        (root / "cases").mkdir()
        (root / "logs").mkdir()
        results = []
        for i, c in enumerate(chosen, 1):
            r = run_case(c, world, root / "cases", root / "logs")
            results.append(r)
            status = "clear" if r.clear else ("SILENT" if r.silent else "unclear")
            print(f"[{i}/{len(chosen)}] {c.name}: exit {r.rc}, {r.seconds:.1f} s, {r.rss_mb:.0f} MB, {status}"
                  f"{', DATA LOST' if r.lost else ''}", flush=True)
        report(results, time.perf_counter() - t0)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
