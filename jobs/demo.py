"""The whole pipeline end to end: ``python jobs/demo.py [--config configs/demo.yaml] [key=value...]``.

The job lives in ``glocon.jobs.demo`` (installed with glocon, also ``glocon`` on the CLI);
this script is what ``ray job submit -- python jobs/demo.py`` runs.
"""

import sys

from glocon.jobs.demo import main

__all__ = ['main']

if __name__ == "__main__":
    sys.exit(main())
