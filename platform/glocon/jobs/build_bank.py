"""Build a prior-feature bank from shards.

    python jobs/build_bank.py --config configs/bank-coco128.yaml prior=runs/pretrain/prior.pt shards=runs/shards/coco128
"""

from __future__ import annotations

import sys

from glocon.bank.build import build_bank
from glocon.bank.config import BankConfig
from glocon.dashboard import Dashboard
from glocon.data.shardset import ShardSet
from glocon.jobmain import run_job


def main(argv: list[str] | None = None) -> int:
    return run_job(argv, BankConfig, build)


def build(cfg: BankConfig) -> None:
    with Dashboard("bank build", total=len(ShardSet.open(cfg.shards).urls), unit="shards") as dash:
        manifest = build_bank(cfg, dash)
        dash.log(
            f"bank {cfg.out}: {manifest['counts']['vectors']} vectors from {manifest['counts']['images']} images, "
            f"dim {manifest['dim']}, index {manifest['factory']} (nprobe {manifest['nprobe']}), {manifest['seconds']['total']:.1f}s"
        )


if __name__ == "__main__":
    sys.exit(main())
