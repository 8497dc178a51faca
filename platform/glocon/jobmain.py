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
    if "-h" in args or "--help" in args:
        # the caller is the job's module (glocon.jobs.X): its docstring is the job's usage
        print(help_text(load, sys._getframe(1).f_globals.get("__doc__")))
        return 0
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


def help_text(load: type[GloconModel] | Callable[[list[str]], Any], doc: str | None) -> str:
    """What ``-h`` prints: the job's own docstring, then (for a config model) its top-level keys,
    each with its type and default, so a user sees what ``key=value`` can set."""
    parts = [doc.strip() if doc else "usage: python jobs/<job>.py --config FILE.yaml [key=value ...]"]
    if isinstance(load, type) and issubclass(load, GloconModel):
        rows = []
        for name, field in load.model_fields.items():
            kind = getattr(field.annotation, "__name__", None) or str(field.annotation).replace("typing.", "")
            default = "required" if field.is_required() else f"default {field.get_default(call_default_factory=True)!r}"
            if isinstance(field.annotation, type) and issubclass(field.annotation, GloconModel):
                default = "section: " + ", ".join(field.annotation.model_fields)
            rows.append(f"  {name:<18} {kind:<16} {default}"[:160])
        parts.append(f"config keys of {load.__name__} (override any of them, nested ones dotted: a.b=value):\n" + "\n".join(rows))
    return "\n\n".join(parts)


def _fail(label: str, exc: GloconError, code: int) -> int:
    print(f"{label}: {exc}", file=sys.stderr)
    return code
