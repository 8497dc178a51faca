"""Pretrain the prior extractor (global + local InfoNCE) as a Ray Train job.

    python jobs/pretrain.py --config configs/pretrain-demo.yaml [key=value ...]

Starts a local Ray bound to 127.0.0.1 when none is running (or joins RAY_ADDRESS, which
``ray job submit`` sets). Rerunning with the same ``name`` and ``storage_path`` resumes.
"""

from __future__ import annotations

from glocon.jobmain import run_job
from glocon.train.config import PretrainConfig
from glocon.train.pretrain import run_pretraining


def main(argv: list[str] | None = None) -> int:
    # only a bad config is a one-line error; a failure mid-run keeps its traceback
    return run_job(argv, PretrainConfig, pretrain, run_exit=None)


def pretrain(cfg: PretrainConfig) -> None:
    out = run_pretraining(cfg)
    print(f"run: {out.run_dir}")
    print(f"export: {out.export_path} ({cfg.protocol})")
    summary = out.summary(cfg)
    for term in ("L_global", "L_local"):
        if term in summary:
            print(f"{term} = {summary[term]:.3f} (last 20 steps; chance ln(1 + negatives) = {summary[term + '_chance']:.3f}, ratio {summary[term + '_vs_chance']:.3f})")
    if summary:
        print(f"patches_per_image = {summary['patches_per_image']:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
