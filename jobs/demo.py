"""The whole pipeline end to end: ``python jobs/demo.py [--config configs/demo.yaml] [key=value...]``.

``make demo`` runs it on the embedded default data; ``make demo DATA=<path> LAYOUT=<voc|coco|fss|folder>``
on a real data set. A rerun reuses finished stages.
"""

from __future__ import annotations

import sys

from glocon.config import load_config, split_cli
from glocon.demo import DemoConfig, run_demo
from glocon.errors import GloconError


def main(argv: list[str] | None = None) -> int:
    try:
        path, overrides = split_cli(list(sys.argv[1:] if argv is None else argv))
        cfg = load_config(DemoConfig, path, overrides)
        run_demo(cfg)
    except GloconError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
