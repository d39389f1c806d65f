"""Backends by device. Each serves the low-level API with one call shape (see base.py)."""
from __future__ import annotations

import importlib.util
import sys

import torch

from .base import Backend


from .cpu import CpuBackend

_CPU = CpuBackend()


def _have_mate() -> bool:
    # Probed per call, off the CPU path: torch.compile traces get_backend for CPU tensors.
    if "mate" in sys.modules:
        return sys.modules["mate"] is not None
    try:
        return importlib.util.find_spec("mate") is not None
    except (ImportError, ValueError):
        return False


def available_backends() -> list[str]:
    """Device types this installation can run on."""
    return ["cpu", "musa"] if _have_mate() else ["cpu"]


def get_backend(device: torch.device) -> Backend:
    """The backend that owns `device`; ValueError naming the device otherwise."""
    kind = device.type
    if kind == "cpu":
        return _CPU
    if kind == "musa" and _have_mate():
        from .musa import MusaBackend

        return MusaBackend()
    hint = " (the musa backend needs MATE: install `mate`)" if kind == "musa" else ""
    raise ValueError(
        f"device: no sageattention backend for device '{device}'{hint}; "
        f"available backends: {', '.join(available_backends())}"
    )


__all__ = ["Backend", "available_backends", "get_backend"]
