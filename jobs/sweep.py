"""Ray Tune sweep over tau, patch method, epochs (and loss weights), scored by a plugin objective.

The job lives in ``glocon.jobs.sweep`` (installed with glocon, also ``glocon`` on the CLI);
this script is what ``ray job submit -- python jobs/sweep.py`` runs.
"""

import sys

from glocon.jobs.sweep import main

__all__ = ['main']

if __name__ == "__main__":
    sys.exit(main())
