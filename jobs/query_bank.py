"""Query a bank by patch (``main``) or score it by class purity (``stats_main``).

The job lives in ``glocon.jobs.query_bank`` (installed with glocon, also ``glocon`` on the CLI);
this script is what ``ray job submit -- python jobs/query_bank.py`` runs.
"""

import sys

from glocon.jobs.query_bank import main, stats_main

__all__ = ['main', 'stats_main']

if __name__ == "__main__":
    sys.exit(main())
