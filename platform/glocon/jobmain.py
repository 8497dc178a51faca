"""The ``main`` that every ``jobs/X.py`` shares: read the command line, load the config, run.

A ``GloconError`` is bad input the user can fix, so it ends as one line on stderr and an exit
code rather than a traceback; any other exception is a bug and propagates.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

from glocon.config import GloconModel, load_config, split_cli
from glocon.errors import GloconError
from glocon.preflight import PreflightError


def run_job(
    argv: list[str] | None,
    load: type[GloconModel] | Callable[[list[str]], Any],
    run: Callable[[Any], int | None],
    *,
    label: str = "error",
    run_exit: int | None = 2,
) -> int:
    """A job's exit code: ``load`` its config from ``argv`` (``sys.argv[1:]`` when None), then ``run`` it.

    ``load`` is a config model, read from ``--config FILE.yaml key=value ...``, or a function of
    the arguments. ``run`` returns the exit code (None means 0). A GloconError prints
    ``{label}: {message}`` on stderr and returns 2 while loading, ``run_exit`` while running;
    with ``run_exit=None`` it propagates from ``run``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        cfg = load_config(load, *split_cli(args)) if isinstance(load, type) else load(args)
    except GloconError as exc:
        return _fail(label, exc, 2)
    try:
        return int(run(cfg) or 0)
    except PreflightError as exc:  # found before any work started: bad input, whatever run_exit says
        return _fail(label, exc, 2)
    except GloconError as exc:
        if run_exit is None:
            raise
        return _fail(label, exc, run_exit)


def _fail(label: str, exc: GloconError, code: int) -> int:
    print(f"{label}: {exc}", file=sys.stderr)
    return code
