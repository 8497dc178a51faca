"""A local web explorer of shards, banks, region maps and probe / sweep results.

    python jobs/explore.py --config configs/explore-demo.yaml            # then open http://127.0.0.1:8765
    python jobs/explore.py --config configs/explore-demo.yaml port=9000

It reads only under the folders its config names and binds 127.0.0.1 unless ``host`` says otherwise.
"""

from __future__ import annotations

import sys

from glocon.explore.config import ExploreConfig
from glocon.explore.serve import serve
from glocon.jobmain import run_job


def main(argv: list[str] | None = None) -> int:
    return run_job(argv, ExploreConfig, serve)


if __name__ == "__main__":
    sys.exit(main())
