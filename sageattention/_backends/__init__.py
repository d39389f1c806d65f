"""Backends by device. Each serves the low-level API with one call shape (see base.py)."""
from __future__ import annotations

import importlib.util

import torch

from .base import Backend


def available_backends() -> list[str]:
    """Device types this installation can run on."""
    names = ["cpu"]
    if importlib.util.find_spec("mate") is not None:
        names.append("musa")
    return names


def get_backend(device: torch.device) -> Backend:
    """The backend that owns `device`; ValueError naming the device otherwise."""
    kind = device.type
    if kind == "cpu":
        from .cpu import CpuBackend

        return CpuBackend()
    if kind == "musa" and importlib.util.find_spec("mate") is not None:
        from .musa import MusaBackend

        return MusaBackend()
    hint = " (the musa backend needs MATE: install `mate`)" if kind == "musa" else ""
    raise ValueError(
        f"device: no sageattention backend for device '{device}'{hint}; "
        f"available backends: {', '.join(available_backends())}"
    )


__all__ = ["Backend", "available_backends", "get_backend"]
