"""Build a prior-feature bank from shards.

The job lives in ``glocon.jobs.build_bank`` (installed with glocon, also ``glocon`` on the CLI);
this script is what ``ray job submit -- python jobs/build_bank.py`` runs.
"""

import sys

from glocon.jobs.build_bank import main

__all__ = ['main']

if __name__ == "__main__":
    sys.exit(main())
