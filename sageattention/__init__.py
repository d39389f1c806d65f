"""sageattention: SageAttention-compatible 8-bit quantized attention.

CPU runs our C++ operator core (SIMD, threads); MUSA delegates to MATE. The public
names and signatures follow upstream SageAttention; see README.md.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _dist_version

from . import ops
from ._backends import available_backends
from ._recipes import DEFAULT_RECIPE, SUPPORTED_RECIPES
from .core import (
    sageattn,
    sageattn_qk_int8_pv_fp16_cuda,
    sageattn_qk_int8_pv_fp16_triton,
    sageattn_qk_int8_pv_fp8_cuda,
    sageattn_qk_int8_pv_fp8_cuda_sm90,
    sageattn_varlen,
)

try:
    __version__ = _dist_version("sageattention")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "2.2.0+src"

__all__ = [
    "DEFAULT_RECIPE",
    "SUPPORTED_RECIPES",
    "__version__",
    "available_backends",
    "ops",
    "sageattn",
    "sageattn_qk_int8_pv_fp16_cuda",
    "sageattn_qk_int8_pv_fp16_triton",
    "sageattn_qk_int8_pv_fp8_cuda",
    "sageattn_qk_int8_pv_fp8_cuda_sm90",
    "sageattn_varlen",
]
