"""What every Ray job's driver checks before Ray starts: pure, cheap checks, one error naming the key.

A job that cannot succeed should say so in one line, in a second, before it starts a cluster,
places workers and retries them: a pretraining run on one shard with two ranks used to start Ray,
fail in both workers, be retried ``max_failures`` times by Ray Train and print 116 lines over 66 s.
Ray Train 2.60 retries every worker failure within ``FailureConfig(max_failures)``: its
``DefaultFailurePolicy`` treats any ``WorkerGroupError`` as retryable and has no option for
exception types (ray/train/v2/_internal/execution/failure_handling/default.py; ray-project/ray
PR #54833: "we always retry if there is still budget"). So whatever the driver can know is
checked here, and a worker is left only with what it cannot know in advance.

Checked (``glocon.data.shardset``: ``ShardSet.open`` then ``ShardSet.check``): the shard folders,
manifests, tars or globs exist and match their shards (every listed file there,
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
from pathlib import Path
from typing import TYPE_CHECKING

# PreflightError and check_out_dir live below glocon.data.shards, which raises both (make_shards'
# out_dir checks); glocon.preflight imports the data modules, so defining them here made a cycle
# (tests/test_import_graph.py). Both are still importable from here.
from glocon.errors import DataError, PreflightError
from glocon.paths import check_out_dir

if TYPE_CHECKING:  # annotations only
    from glocon.bank.config import BankConfig
    from glocon.data.shardset import ShardSet
    from glocon.fewshot.config import FewShotConfig
    from glocon.train.config import PretrainConfig

MAKE_SHARDS = "jobs/make_shards.py"


def check_shards(spec: str | None, key: str, indexed: bool = False) -> ShardSet:
    """The shards ``spec`` names (``ShardSet.open``), checked (``ShardSet.check``); errors name ``key``.
    ``indexed``: the reader reads by key (``ShardIndex``), so the spec must name a manifest."""
    from glocon.data.manifest import MANIFEST_NAME
    from glocon.data.shardset import ShardSet, ShardSpecError

    if not spec:
        raise PreflightError(f"{key} is empty: expected a shard folder or manifest.json (make it with {MAKE_SHARDS})")
    try:
        shards = ShardSet.open(spec)
        if indexed and shards.manifest is None:
            raise PreflightError(f"{key}={spec}: names tars without their {MANIFEST_NAME}; expected a shard folder with one, or the manifest (it is read by key)")
        shards.check()
    except ShardSpecError as exc:
        raise PreflightError(f"{key}={spec}: {exc.reason}") from None
    except DataError as exc:
        raise PreflightError(f"{key}={spec}: {exc}") from None
    return shards


def check_readers(sets: list[ShardSet], key: str, ranks: int, loader_workers: int, resampled: bool, ranks_key: str) -> None:
    """Without resampling every reader (rank x DataLoader worker) needs at least one shard of its own."""
    shards = sum(len(s.urls) for s in sets)
    readers = ranks * max(1, loader_workers)
    if resampled or shards >= readers:
        return
    known = [s for s in sets if s.manifest is not None]
    samples = sum(s.count for s in known) if known else None
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
    sets = [check_shards(spec, key) for key, spec in specs]
    # The loop streams in each Train worker's own process (no DataLoader processes): one reader per rank.
    check_readers(sets, "data.shards", cfg.num_workers, 1, cfg.data.resampled, ranks_key)
    samples = cfg.data.samples_per_epoch
    if samples is None:
        samples = sum(s.count for s in sets)
    if samples < cfg.batch_size:
        raise PreflightError(
            f"batch_size={cfg.batch_size}: the shards hold {samples} samples per epoch, less than one global batch "
            "(lower batch_size, or make more samples)"
        )
    if cfg.probe.every_epochs:
        check_shards(cfg.probe.train_shards or cfg.data.shards, "probe.train_shards", indexed=True)
        if cfg.probe.val_shards:
            check_shards(cfg.probe.val_shards, "probe.val_shards", indexed=True)


def check_sweep(pretrain_cfg: PretrainConfig, objective_cfg: FewShotConfig | None = None, probe: dict | None = None) -> None:
    """One sweep trial's validated PretrainConfig, and the objective's data: the few-shot config
    or the dense probe's settings (``glocon.tune.objective.probe_objective``: paths resolved)."""
    check_pretrain(pretrain_cfg, ranks_key="resources.workers_per_trial")
    if objective_cfg is not None:
        check_fewshot(objective_cfg, mode="objective")
    if probe is not None:
        check_shards(probe["train_shards"], "objective.probe.train_shards", indexed=True)
        if probe.get("val_shards"):
            check_shards(probe["val_shards"], "objective.probe.val_shards", indexed=True)


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
    check_shards(cfg.shards, "shards")


def check_fewshot(cfg: FewShotConfig, mode: str = "fit") -> None:
    """A FewShotConfig (paths resolved) before ``fit`` / ``eval`` / the sweep ``objective`` starts Ray.

    Few-shot reads by random access (``ShardIndex``), so any number of shards serves any number
    of workers; what can be wrong is a missing or damaged shard set, prior or weights file.
    """
    shards = cfg.data.shards
    specs = [shards] if isinstance(shards, str) or shards is None else list(shards)
    for i, spec in enumerate(specs):
        check_shards(spec, "data.shards" if len(specs) == 1 else f"data.shards[{i}]", indexed=True)
    if mode == "eval" and cfg.eval.shards:
        held = [cfg.eval.shards] if isinstance(cfg.eval.shards, str) else list(cfg.eval.shards)
        for i, spec in enumerate(held):
            check_shards(spec, "eval.shards" if len(held) == 1 else f"eval.shards[{i}]", indexed=True)
    if cfg.prior and mode != "objective":  # the objective's prior is the trial's own export
        check_file(cfg.prior, "prior", "a prior-extractor export (jobs/pretrain.py writes <storage_path>/<name>/prior.pt)")
    if mode == "eval" and cfg.eval.weights and not Path(cfg.eval.weights).exists():
        raise PreflightError(f"eval.weights={cfg.eval.weights}: no such file or folder (expected a fit's model.pt or its folder)")
    if cfg.data.fss_split_dir and not Path(cfg.data.fss_split_dir).is_dir():
        raise PreflightError(f"data.fss_split_dir={cfg.data.fss_split_dir}: not a folder (expected HSNet's splits/fss)")
