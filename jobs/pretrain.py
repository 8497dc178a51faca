"""Pretrain the prior extractor (global + local InfoNCE) as a Ray Train job.

The job lives in ``glocon.jobs.pretrain`` (installed with glocon, also ``glocon`` on the CLI);
this script is what ``ray job submit -- python jobs/pretrain.py`` runs.
"""

import sys

from glocon.jobs.pretrain import main

__all__ = ['main']

if __name__ == "__main__":
    sys.exit(main())
