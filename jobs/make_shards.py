"""Turn a dataset layout (folder, VOC, COCO, FSS-1000, embedded) into WebDataset shards on Ray.

The job lives in ``glocon.jobs.make_shards`` (installed with glocon, also ``glocon`` on the CLI);
this script is what ``ray job submit -- python jobs/make_shards.py`` runs.
"""

import sys

from glocon.jobs.make_shards import main

__all__ = ['main']

if __name__ == "__main__":
    sys.exit(main())
