"""Where a job's relative paths point: the one rule every job uses for its inputs and outputs.

Under ``ray job submit --working-dir .`` the driver runs inside Ray's uploaded copy of the
working dir (``/tmp/ray/session_*/runtime_resources/working_dir_files/_ray_pkg_*``), which Ray
deletes, and a resubmission after any file change gets a new copy. A relative ``runs/...`` there
would read data that is not in the copy (ignored files are not uploaded) and write checkpoints
and exports that vanish with it. So:

- a URI (``s3://``, ``gs://``, ``file://``: Ray's storage) passes through unchanged, and so
  does an absolute path (a shared filesystem path must stay the name every node knows);
- a relative path resolves against ``$GLOCON_SUBMIT_DIR`` when it is set (the README submits
  with ``-- env GLOCON_SUBMIT_DIR="$PWD" python jobs/...``: the folder the user submitted from);
- otherwise, inside a Ray job whose runtime env has a ``working_dir``, a relative path is refused
  before Ray starts, with an error naming the key and the absolute form to give instead;
- otherwise (a plain local run) it resolves against the current directory, as it always did.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from glocon.errors import ConfigError, PreflightError

SUBMIT_DIR_ENV = "GLOCON_SUBMIT_DIR"
# Set by Ray's job supervisor for every entrypoint (ray/dashboard/modules/job/job_supervisor.py,
# _get_driver_env_vars): the job's runtime env as JSON, "working_dir" included when one was uploaded.
RAY_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
HINT = f'submit with `ray job submit ... -- env {SUBMIT_DIR_ENV}="$PWD" python jobs/...` (README, "Pretraining")'


def is_uri(path: str) -> bool:
    """A storage URI (``s3://bucket/x``, ``gs://``, ``file://``) rather than a filesystem path."""
    return "://" in path


def ray_job_working_dir() -> str | None:
    """The uploaded working dir of the Ray job this process is the driver of, else None."""
    raw = os.environ.get(RAY_JOB_CONFIG_ENV)
    if not raw:
        return None
    try:
        runtime_env = (json.loads(raw) or {}).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return None
    return runtime_env.get("working_dir") or None


def submit_dir() -> Path | None:
    """``$GLOCON_SUBMIT_DIR`` as an existing absolute folder on this node, or None when unset."""
    raw = os.environ.get(SUBMIT_DIR_ENV)
    if not raw:
        return None
    base = Path(raw).expanduser()
    if not base.is_absolute():
        raise ConfigError(f"{SUBMIT_DIR_ENV}={raw!r}: expected an absolute folder (the README passes \"$PWD\")")
    if not base.is_dir():
        raise ConfigError(
            f"{SUBMIT_DIR_ENV}={raw}: no such folder on this node (a remote cluster does not see the submitting "
            "machine's folders: give absolute paths on storage every node mounts instead)"
        )
    return base


def resolve(path: str | None, key: str) -> str | None:
    """``path`` (the value of config key ``key``) as a path that outlives a Ray job; see the module doc.

    Empty and None stay as they are (the key's own check says whether it is required).
    """
    if not path or is_uri(path):
        return path
    p = Path(path).expanduser()
    if p.is_absolute():
        return os.path.normpath(p)
    base = submit_dir()
    if base is None:
        copy = ray_job_working_dir()
        if copy is not None:
            raise ConfigError(
                f"{key}={path} is relative, and this Ray job runs in Ray's temporary copy of the working dir "
                f"({Path.cwd()}), which is deleted when the job ends: give it as an absolute path "
                f"({key}=/path/to/your/checkout/{p.as_posix()}), or {HINT}"
            )
        base = Path.cwd()
    return os.path.normpath(base / p)


def resolve_all(paths: list[str], key: str) -> list[str]:
    return [resolve(p, f"{key}[{i}]") or p for i, p in enumerate(paths)]


def check_out_dir(path: str | os.PathLike, key: str) -> None:
    """An output folder: it, or the nearest part of it that exists, must be a folder (not a file)."""
    p = Path(path)
    for part in (p, *p.parents):
        if part.exists():
            if not part.is_dir():
                where = "" if part == p else f": {part} on its path"
                raise PreflightError(f"{key}={path}{where} is a file, expected a folder (or a path that does not exist yet)")
            return
