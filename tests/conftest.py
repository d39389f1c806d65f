"""Shared fixtures and helpers for the sageattention test suite."""

from __future__ import annotations

import os
import sys

import pytest
import torch

# Make `import reference` work regardless of pytest's import mode.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cpu_isas  # noqa: E402  (tests/cpu_isas.py, found through the path above)
import sageattention._lib as _lib  # noqa: E402

try:  # hypothesis is optional at collection time
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "sageattn",
        max_examples=25,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.load_profile("sageattn")
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(autouse=True)
def _deterministic_torch() -> None:
    torch.manual_seed(0)


@pytest.fixture(params=cpu_isas.isa_params())
def isa(request) -> str:
    """Each SIMD path of the CPU core in turn (scalar first); "auto" again afterwards."""
    request.addfinalizer(lambda: _lib.set_cpu_isa("auto"))
    return request.param


FAKE_MATE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_mate")


def _drop_mate_modules() -> None:
    for name in [m for m in sys.modules if m == "mate" or m.startswith("mate.")]:
        del sys.modules[name]


@pytest.fixture
def fake_mate(monkeypatch: pytest.MonkeyPatch):
    """The contract-faithful fake MATE (tests/fake_mate) importable as `mate`, with
    SAGEATTN_BACKEND=musa so every call, on CPU tensors, goes through the MUSA backend.
    Yields the fake `mate.sage_attention_interface` module (its `calls` list records
    each accepted call)."""
    _drop_mate_modules()
    monkeypatch.syspath_prepend(FAKE_MATE_DIR)
    monkeypatch.setenv("SAGEATTN_BACKEND", "musa")
    import mate.sage_attention_interface as iface

    assert iface.__file__.startswith(FAKE_MATE_DIR), iface.__file__
    iface.calls.clear()
    yield iface
    _drop_mate_modules()
