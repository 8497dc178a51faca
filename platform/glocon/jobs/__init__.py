"""The jobs, one module each, installed with glocon so ``glocon <command>`` runs from a wheel.

``jobs/X.py`` in a checkout is a three-line script that calls ``glocon.jobs.X.main``: it is what
``ray job submit -- python jobs/X.py`` runs, and the same code path as ``glocon X``.
"""
