"""The one place glocon reads a torch file: ``torch.load(weights_only=True)``, errors that name it.

A checkpoint or export may come from anywhere; ``weights_only=True`` refuses pickled code (a
``__reduce__`` that would run on load). PyTorch's own refusal message ends with advice to retry
with ``weights_only=False``, which is exactly what a user must not do with an untrusted file, so
that advice is cut from the message glocon shows.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from glocon.errors import CheckpointError

_UNPICKLER = "WeightsUnpickler error:"


def _reason(exc: Exception) -> str:
    """The useful part of torch's message: for refused code, the global it refused; otherwise its first line."""
    text = str(exc).strip()
    if _UNPICKLER in text:
        return text.split(_UNPICKLER, 1)[1].strip().splitlines()[0].strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def load_weights_only(path: str | os.PathLike, what: str = "checkpoint", map_location: Any = "cpu") -> Any:
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
