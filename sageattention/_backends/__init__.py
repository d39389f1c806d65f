"""Backends, and the one table that picks one for a call.

Each backend serves the low-level API with one call shape (see base.py). By default the
device of q picks the backend; the SAGEATTN_BACKEND environment variable forces one for
every tensor, CPU tensors included (how the tests run the MUSA path against a fake MATE,
and the Triton kernels in Triton's interpreter with TRITON_INTERPRET=1).
"""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch

from .base import Backend
from .cpu import CpuBackend

BACKEND_ENV = "SAGEATTN_BACKEND"

_CPU = CpuBackend()


def _have_mate() -> bool:
    # Probed per call, off the CPU path: torch.compile traces get_backend for CPU tensors.
    if "mate" in sys.modules:
        return sys.modules["mate"] is not None
    try:
        return importlib.util.find_spec("mate") is not None
    except (ImportError, ValueError):
        return False


def _have_triton() -> bool:
    from .triton import have_triton

    return have_triton()


def _load_cpu() -> Backend:
    return _CPU


def _load_musa() -> Backend:
    from .musa import MusaBackend

    return MusaBackend()


def _load_triton() -> Backend:
    from .triton import TritonBackend

    return TritonBackend()


@dataclass(frozen=True)
class _Entry:
    """One backend: the device type it owns, how to load it, and what it needs."""

    device_type: str
    load: Callable[[], Backend]
    available: Callable[[], bool]
    missing: str  # what to install when not available
    # Device types it can run on when forced; None: any (its library decides).
    runs_on: Optional[Tuple[str, ...]]


# Adding a backend is one entry here (and its module). "cuda" is also ROCm's device type.
_BACKENDS: dict[str, _Entry] = {
    "cpu": _Entry("cpu", _load_cpu, lambda: True, "", runs_on=("cpu",)),
    "musa": _Entry("musa", _load_musa, _have_mate, "the musa backend needs MATE: install `mate`", runs_on=None),
    # On CPU tensors (forced) it runs in Triton's interpreter: TRITON_INTERPRET=1.
    "triton": _Entry("cuda", _load_triton, _have_triton, "the cuda backend needs Triton: install `triton`",
                     runs_on=("cuda", "cpu")),
}


def available_backends() -> list[str]:
    """Backends this installation can run."""
    return [name for name, e in _BACKENDS.items() if e.available()]


def forced_backend() -> Optional[str]:
    """The backend SAGEATTN_BACKEND names, None when unset or empty; ValueError if unknown."""
    name = os.environ.get(BACKEND_ENV, "").strip().lower()
    if not name:
        return None
    if name not in _BACKENDS:
        raise ValueError(
            f"{BACKEND_ENV}: unknown backend {name!r}; expected one of {', '.join(_BACKENDS)} (or unset)"
        )
    return name


def _load(name: str, device: torch.device, why: str) -> Backend:
    entry = _BACKENDS[name]
    if not entry.available():
        raise ValueError(
            f"{why}: the {name} backend is not available ({entry.missing}); "
            f"available backends: {', '.join(available_backends())}"
        )
    if entry.runs_on is not None and device.type not in entry.runs_on:
        raise ValueError(f"{why}: the {name} backend cannot run on device '{device}'")
    return entry.load()


def get_backend(device: torch.device) -> Backend:
    """The backend SAGEATTN_BACKEND forces, else the one that owns `device`; ValueError
    naming the device (or the variable) otherwise."""
    forced = forced_backend()
    if forced is not None:
        return _load(forced, device, f"{BACKEND_ENV}={forced}")
    kind = device.type
    if kind == "cpu":  # the common case first: no table walk on the CPU hot path
        return _CPU
    for name, entry in _BACKENDS.items():
        if entry.device_type == kind and entry.available():
            return entry.load()
    hint = next((f" ({e.missing})" for e in _BACKENDS.values() if e.device_type == kind), "")
    raise ValueError(
        f"device: no sageattention backend for device '{device}'{hint}; "
        f"available backends: {', '.join(available_backends())}"
    )


__all__ = ["BACKEND_ENV", "Backend", "available_backends", "forced_backend", "get_backend"]
