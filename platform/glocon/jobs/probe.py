"""Dense evaluation of priors: retrieval segmentation, linear probe, prior-map AUROC, balanced purity.

    python jobs/probe.py --config configs/probe-demo.yaml
    python jobs/probe.py --config configs/probe-demo.yaml run=runs/demo/pretrain/prior     # every epoch's export
"""

from __future__ import annotations

import sys
from pathlib import Path

from glocon.dashboard import Dashboard
from glocon.jobmain import run_job
from glocon.probe.config import ProbeConfig
from glocon.probe.run import run_probe


def main(argv: list[str] | None = None) -> int:
    return run_job(argv, ProbeConfig, probe)


def probe(cfg: ProbeConfig) -> None:
    with Dashboard("probe", unit="priors") as dash:
        run_probe(cfg, log=dash.log)
    print((Path(cfg.out) / "results.md").read_text(), end="")
    print(f"results: {Path(cfg.out) / 'results.json'}")


if __name__ == "__main__":
    sys.exit(main())
