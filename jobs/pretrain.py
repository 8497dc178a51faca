"""Pretrain the prior extractor (global + local InfoNCE) as a Ray Train job.

    python jobs/pretrain.py --config configs/pretrain-demo.yaml [key=value ...]

Starts a local Ray bound to 127.0.0.1 when none is running (or joins RAY_ADDRESS, which
``ray job submit`` sets). Rerunning with the same ``name`` and ``storage_path`` resumes.
"""

from __future__ import annotations

import sys

from glocon.config import load_config, split_cli
from glocon.errors import GloconError
from glocon.train.config import PretrainConfig
from glocon.train.pretrain import run_pretraining


def main(argv: list[str] | None = None) -> int:
    try:
        path, overrides = split_cli(list(sys.argv[1:] if argv is None else argv))
        cfg = load_config(PretrainConfig, path, overrides)
    except GloconError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = run_pretraining(cfg)
    print(f"run: {out.run_dir}")
    print(f"export: {out.export_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
