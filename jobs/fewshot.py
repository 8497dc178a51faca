"""Fit or evaluate a few-shot plugin on base / novel classes.

The job lives in ``glocon.jobs.fewshot`` (installed with glocon, also ``glocon`` on the CLI);
this script is what ``ray job submit -- python jobs/fewshot.py`` runs.
"""

import sys

from glocon.jobs.fewshot import main

__all__ = ['main']

if __name__ == "__main__":
    sys.exit(main())
