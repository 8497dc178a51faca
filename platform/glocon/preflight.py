"""What every Ray job's driver checks before Ray starts: pure, cheap checks, one error naming the key.

A job that cannot succeed should say so in one line, in a second, before it starts a cluster,
places workers and retries them: a pretraining run on one shard with two ranks used to start Ray,
fail in both workers, be retried ``max_failures`` times by Ray Train and print 116 lines over 66 s.
Ray Train 2.60 retries every worker failure within ``FailureConfig(max_failures)``: its
``DefaultFailurePolicy`` treats any ``WorkerGroupError`` as retryable and has no option for
exception types (ray/train/v2/_internal/execution/failure_handling/default.py; ray-project/ray
PR #54833: "we always retry if there is still budget"). So whatever the driver can know is
checked here, and a worker is left only with what it cannot know in advance.

Checked: the shard folders or manifests exist and match their shards (every listed file there,
of the size the manifest says, ending like a finished tar, with the manifest's sha256: a shard
changed in place at the same size is named here, not after Ray has retried its workers; hashing
runs at disk speed, about a second per GB, and is kept per (path, size, mtime) for the process's
own readers, ``glocon.data.verify``), enough shards for every reader (ranks x loader workers) unless ``data.resampled``,
at least one global batch, the prior and weights files. Each failure is a ``PreflightError``
(a ``ConfigError``: the jobs print ``error: <message>`` and exit 2), its message naming the key.

Entry points: ``check_pretrain(cfg)``, ``check_sweep(pretrain_cfg, ...)``, ``check_bank(cfg)``
and ``check_fewshot(cfg, mode)`` for the few-shot fit, eval and objective.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# PreflightError and check_out_dir live below glocon.data.shards, which raises both (make_shards'
# out_dir checks); glocon.preflight imports the data modules, so defining them here made a cycle
# (tests/test_import_graph.py). Both are still importable from here.
from glocon.errors import DataError, PreflightError
from glocon.paths import check_out_dir

if TYPE_CHECKING:  # annotations only
    from glocon.bank.config import BankConfig
    from glocon.fewshot.config import FewShotConfig
    from glocon.train.config import PretrainConfig

MAKE_SHARDS = "jobs/make_shards.py"


@dataclass
class ShardSet:
    spec: str
    urls: list[str]  # shards that hold samples
    samples: int | None  # None: a folder of plain tars without a manifest (not counted here)
    per_shard: int | None  # make_shards' samples_per_shard (None without a manifest)


def shard_set(spec: str | None, key: str) -> ShardSet:
    """The shards of a folder or manifest, checked against the manifest; errors name ``key``."""
    from glocon.data.readers import check_tar_end
    from glocon.data.manifest import MANIFEST_NAME, Manifest
    from glocon.data.verify import check_shard

    if not spec:
        raise PreflightError(f"{key} is empty: expected a shard folder or manifest.json (make it with {MAKE_SHARDS})")
    p = Path(spec)
    if not p.exists():
        raise PreflightError(f"{key}={spec}: no such shard folder or manifest (make it with {MAKE_SHARDS} out_dir={spec})")
    if p.is_dir() and not (p / MANIFEST_NAME).is_file():
        tars = sorted(str(t) for t in p.glob("*.tar"))
        if not tars:
            raise PreflightError(f"{key}={spec}: no {MANIFEST_NAME} and no *.tar shards in it (make them with {MAKE_SHARDS})")
        return ShardSet(spec, tars, None, None)
    try:
        manifest = Manifest.load(p)
    except DataError as exc:
        raise PreflightError(f"{key}={spec}: {exc}") from None
    listed = manifest.root / MANIFEST_NAME
    for entry in manifest.shards:
        shard = manifest.shard_path(entry.name)
        if not shard.is_file():
            raise PreflightError(f"{key}={spec}: shard {shard} listed in {listed} is missing (rerun make_shards with the same config to rebuild it)")
        size = shard.stat().st_size
        if size != entry.bytes:
            raise PreflightError(f"{key}={spec}: shard {shard} is {size} bytes, {listed} says {entry.bytes} (rerun make_shards with the same config to rebuild it)")
        try:
            check_tar_end(shard)
        except DataError as exc:
            raise PreflightError(f"{key}={spec}: {exc} (rerun make_shards with the same config to rebuild it)") from None
        try:
            check_shard(shard, entry.sha256, listed)  # its message says how to rebuild it
        except DataError as exc:
            raise PreflightError(f"{key}={spec}: {exc}") from None
    urls = manifest.urls()
    if not urls:
        t = manifest.totals
        raise PreflightError(f"{key}={spec}: {listed} lists no samples ({t.get('records', 0)} inputs, {t.get('rejected', 0)} rejected; see its 'rejected' list)")
    per_shard = manifest.config.get("samples_per_shard")  # else what the fullest shard holds
    per_shard = per_shard if isinstance(per_shard, int) else max(s.count for s in manifest.shards)
    return ShardSet(spec, urls, int(manifest.totals["samples"]), per_shard)


def check_readers(sets: list[ShardSet], key: str, ranks: int, loader_workers: int, resampled: bool, ranks_key: str) -> None:
    """Without resampling every reader (rank x DataLoader worker) needs at least one shard of its own."""
    shards = sum(len(s.urls) for s in sets)
    readers = ranks * max(1, loader_workers)
    if resampled or shards >= readers:
        return
    known = [s for s in sets if s.samples is not None]
    samples = sum(s.samples for s in known) if known else None
    per_shard = next((s.per_shard for s in sets if s.per_shard), None)
    now = f" (now {per_shard})" if per_shard else ""
    smaller = f"samples_per_shard={max(1, samples // readers)}{now}" if samples and samples >= readers else "a smaller samples_per_shard"
    raise PreflightError(
        f"{key}: {shards} shard(s) cannot feed {ranks_key}={ranks} ranks x {max(1, loader_workers)} loader worker(s) = "
        f"{readers} readers, each of which reads shards of its own: rerun {MAKE_SHARDS} with {smaller} "
        f"to get >= {readers} shards, lower {ranks_key}, or set data.resampled=true"
    )


def check_file(path: str | None, key: str, what: str) -> None:
    if not path:
        raise PreflightError(f"{key} is empty: expected {what}")
    if "://" not in path and not os.path.isfile(path):
        raise PreflightError(f"{key}={path}: no such file (expected {what})")


def check_pretrain(cfg: PretrainConfig, *, ranks_key: str = "num_workers") -> None:
    """A PretrainConfig (paths already resolved): the run folder, shards, readers per shard, one
    global batch, probe shards."""
    if "://" not in str(cfg.storage_path):  # a storage URI is Ray's to check
        check_out_dir(cfg.storage_path, "storage_path")
        check_out_dir(Path(cfg.storage_path).expanduser() / cfg.name, "name")
    specs = [("data.shards", cfg.data.shards)] + [(f"data.extra_shards[{i}]", s) for i, s in enumerate(cfg.data.extra_shards)]
    sets = [shard_set(spec, key) for key, spec in specs]
    # The loop streams in each Train worker's own process (no DataLoader processes): one reader per rank.
    check_readers(sets, "data.shards", cfg.num_workers, 1, cfg.data.resampled, ranks_key)
    samples = cfg.data.samples_per_epoch
    if samples is None:
        from glocon.train.data import count_samples

        samples = sum(s.samples if s.samples is not None else count_samples(s.spec, s.urls) for s in sets)
    if samples < cfg.batch_size:
        raise PreflightError(
            f"batch_size={cfg.batch_size}: the shards hold {samples} samples per epoch, less than one global batch "
            "(lower batch_size, or make more samples)"
        )
    if cfg.probe.every_epochs:
        shard_set(cfg.probe.train_shards or cfg.data.shards, "probe.train_shards")
        if cfg.probe.val_shards:
            shard_set(cfg.probe.val_shards, "probe.val_shards")


def check_sweep(pretrain_cfg: PretrainConfig, objective_cfg: FewShotConfig | None = None, probe: dict | None = None) -> None:
    """One sweep trial's validated PretrainConfig, and the objective's data: the few-shot config
    or the dense probe's settings (``glocon.tune.objective.probe_objective``: paths resolved)."""
    check_pretrain(pretrain_cfg, ranks_key="resources.workers_per_trial")
    if objective_cfg is not None:
        check_fewshot(objective_cfg, mode="objective")
    if probe is not None:
        shard_set(probe["train_shards"], "objective.probe.train_shards")
        if probe.get("val_shards"):
            shard_set(probe["val_shards"], "objective.probe.val_shards")


def check_bank(cfg: BankConfig) -> None:
    """A BankConfig: the prior export exists, the class names read, the shards exist and match their
    manifest, ``out`` can be a folder."""
    check_out_dir(cfg.out, "out")
    check_file(cfg.prior, "prior", "a prior-extractor export, e.g. <storage_path>/<name>/prior.pt of jobs/pretrain.py")
    if cfg.class_names:  # read at the end of a build: a bad file would cost the whole embedding first
        from glocon.bank.store import load_class_names

        try:
            load_class_names(cfg.class_names)
        except DataError as exc:
            raise PreflightError(str(exc)) from None
    spec = cfg.shards
    if spec and not spec.endswith(".tar") and not any(c in spec for c in "*?[,"):
        shard_set(spec, "shards")
        return
    from glocon.bank.shardio import shard_urls

    try:
        shard_urls(spec)
    except DataError as exc:
        raise PreflightError(f"shards: {exc}") from None


def check_fewshot(cfg: FewShotConfig, mode: str = "fit") -> None:
    """A FewShotConfig (paths resolved) before ``fit`` / ``eval`` / the sweep ``objective`` starts Ray.

    Few-shot reads by random access (``ShardIndex``), so any number of shards serves any number
    of workers; what can be wrong is a missing or damaged shard set, prior or weights file.
    """
    shards = cfg.data.shards
    specs = [shards] if isinstance(shards, str) or shards is None else list(shards)
    for i, spec in enumerate(specs):
        shard_set(spec, "data.shards" if len(specs) == 1 else f"data.shards[{i}]")
    if mode == "eval" and cfg.eval.shards:
        held = [cfg.eval.shards] if isinstance(cfg.eval.shards, str) else list(cfg.eval.shards)
        for i, spec in enumerate(held):
            shard_set(spec, "eval.shards" if len(held) == 1 else f"eval.shards[{i}]")
    if cfg.prior and mode != "objective":  # the objective's prior is the trial's own export
        check_file(cfg.prior, "prior", "a prior-extractor export (jobs/pretrain.py writes <storage_path>/<name>/prior.pt)")
    if mode == "eval" and cfg.eval.weights and not Path(cfg.eval.weights).exists():
        raise PreflightError(f"eval.weights={cfg.eval.weights}: no such file or folder (expected a fit's model.pt or its folder)")
    if cfg.data.fss_split_dir and not Path(cfg.data.fss_split_dir).is_dir():
        raise PreflightError(f"data.fss_split_dir={cfg.data.fss_split_dir}: not a folder (expected HSNet's splits/fss)")
