"""Shared fixtures and helpers for the sageattention test suite."""

from __future__ import annotations

import os
import sys

import pytest
import torch

# Make `import reference` work regardless of pytest's import mode.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

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
