"""Device is found, not assumed: CUDA and AMP when present, CPU always works."""

from __future__ import annotations

import contextlib

import torch


def pick_device(prefer: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available; ``cpu``/``cuda`` force one (cuda fails clearly if absent)."""
    if prefer == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if prefer == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was asked for, but torch.cuda.is_available() is False on this machine")
    return torch.device(prefer)


def autocast(device: torch.device, enabled: bool = True):
    """Mixed precision on CUDA only; on CPU a no-op context (fp32 is the reference there)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()
