"""The one place glocon reads a torch file: ``torch.load(weights_only=True)``, errors that name it.

A checkpoint or export may come from anywhere; ``weights_only=True`` refuses pickled code (a
``__reduce__`` that would run on load). PyTorch's own refusal message ends with advice to retry
with ``weights_only=False``, which is exactly what a user must not do with an untrusted file, so
that advice is cut from the message glocon shows.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch

from glocon.errors import CheckpointError

_UNPICKLER = "WeightsUnpickler error:"


# torch's framing around the reason: the advice to retry unsafely, a plea to file an issue, a docs link
_ADVICE = re.compile(r"weights_only\W+(?:set to\W+)?False", re.IGNORECASE)
_FRAME = ("Weights only load failed", "Please file an issue", "Check the documentation")


def _reason(exc: Exception) -> str:
    """The useful part of torch's message: for refused code, the global or opcode it refused;
    otherwise its first line. Never the advice to load with ``weights_only=False``."""
    text = str(exc).strip()
    if _UNPICKLER in text:
        text = text.split(_UNPICKLER, 1)[1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(_FRAME) and not _ADVICE.search(ln)]
    return useful[0][:300] if useful else type(exc).__name__


def load_weights_only(path: str | os.PathLike, what: str = "checkpoint", map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; a missing, truncated or code-carrying file raises
    ``CheckpointError`` naming ``what`` and the path."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        raise CheckpointError(
            f"{what} {path}: refused or unreadable with torch.load(weights_only=True): it is truncated, "
            f"not a torch file, or carries pickled code, and was not loaded ({type(exc).__name__}: {_reason(exc)})"
        ) from None
