"""Dense evaluation of priors: retrieval segmentation, linear probe, prior-map AUROC, balanced purity.

The job lives in ``glocon.jobs.probe`` (installed with glocon, also ``glocon`` on the CLI);
this script is what ``ray job submit -- python jobs/probe.py`` runs.
"""

import sys

from glocon.jobs.probe import main

__all__ = ['main']

if __name__ == "__main__":
    sys.exit(main())
