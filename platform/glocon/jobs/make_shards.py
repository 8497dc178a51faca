"""Turn a dataset layout (folder, VOC, COCO, FSS-1000, embedded) into WebDataset shards on Ray.

    python jobs/make_shards.py --config configs/shards-coco128.yaml [key=value ...]

e.g. ``longest_side=320 samples_per_shard=64 data.limit=100 strict=true``. Writes
``{out_dir}/{prefix}-000000.tar ...``, ``manifest.json`` and ``config.resolved.yaml``. Rerunning
the same command after an interruption rebuilds only the missing or damaged shards (a shard whose
bytes differ from its done-record's sha256 too). A folder holding shards of another configuration is
refused, naming what differs, unless ``overwrite=true`` (the old set stays whole until the new one
is complete). Exit codes: 2 for a bad config, 1 for bad data,
including a run whose every input was rejected (the manifest lists why). Starts a local
Ray bound to 127.0.0.1 when none is running, or joins ``ray.address`` / ``RAY_ADDRESS`` (which
``ray job submit`` sets); on a cluster, ``out_dir`` and the data must be on storage every node sees.
"""

from __future__ import annotations

import sys

from glocon.data.shardplan import ShardsConfig
from glocon.data.shards import make_shards
from glocon.jobmain import run_job


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    # a bad config exits 2; bad data found while building exits 1
    return run_job(argv, ShardsConfig, build, run_exit=1)


def build(cfg: ShardsConfig) -> None:
    make_shards(cfg)  # prints progress, then the summary (shards, samples, what was rejected)


if __name__ == "__main__":
    raise SystemExit(main())
