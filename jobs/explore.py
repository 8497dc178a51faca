"""A local web explorer of shards, banks, region maps and probe / sweep results.

The job lives in ``glocon.jobs.explore`` (installed with glocon, also ``glocon`` on the CLI);
this script is what ``ray job submit -- python jobs/explore.py`` runs.
"""

import sys

from glocon.jobs.explore import main

__all__ = ['main']

if __name__ == "__main__":
    sys.exit(main())
