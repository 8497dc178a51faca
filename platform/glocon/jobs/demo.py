"""The whole pipeline end to end: ``python jobs/demo.py [--config configs/demo.yaml] [key=value...]``.

``make demo`` runs it on the embedded default data; ``make demo DATA=<path> LAYOUT=<voc|coco|fss|folder>``
on a real data set. A rerun reuses finished stages.
"""

from __future__ import annotations

import sys

from glocon.demo import run_demo
from glocon.demo.config import DemoConfig
from glocon.jobmain import run_job


def main(argv: list[str] | None = None) -> int:
    return run_job(argv, DemoConfig, demo)


def demo(cfg: DemoConfig) -> None:
    run_demo(cfg)  # the stages print as they run; the summary it returns is for bench/demo.py


if __name__ == "__main__":
    sys.exit(main())
