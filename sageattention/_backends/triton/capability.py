"""Which dots a device runs, in one table (docs/DESIGN.md, "Triton backend").

P·V is an fp8 dot where the GPU has an OCP e4m3 (float8_e4m3fn) dot, else the same
numbers go through an exact 16-bit dot (PV_MODE 1 in attention_kernel.py), which gives
the same products and so the same result up to summation order. AMD's CDNA3 (gfx942)
has fp8 only in the e4m3fnuz format, whose bias differs: it takes the 16-bit path.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Callable, Tuple

import torch

PV_FP8_DOT = 0
PV_FP8_AS_FP16 = 1
PV_HALF_V = 2

FP8_DOT_ENV = "SAGEATTN_TRITON_FP8_DOT"  # "0" / "1": override the table (tests, bring-up)


@dataclass(frozen=True)
class _Row:
    vendor: str  # "nvidia", "amd" or "interpreter"
    matches: Callable[[str], bool]  # on the arch: "sm_89", "gfx942", "cpu"
    fp8_dot: bool
    gpus: str
    half_dot: bool = True  # 16-bit dots (the interpreter's bf16 dot is wrong)  # for the docs


def _sm(arch: str) -> Tuple[int, int]:
    major, minor = arch[3:-1], arch[-1]
    return int(major), int(minor)


# First matching row wins.
_TABLE: Tuple[_Row, ...] = (
    _Row("nvidia", lambda a: _sm(a) >= (8, 9), True, "Ada sm_89, Hopper sm_90, Blackwell sm_100/120"),
    _Row("nvidia", lambda a: _sm(a) >= (8, 0), False, "Ampere sm_80/86/87"),
    _Row("amd", lambda a: a.startswith(("gfx950", "gfx12")), True, "CDNA4 MI350 (gfx950), RDNA4 (gfx12xx)"),
    _Row("amd", lambda a: a.startswith(("gfx94", "gfx90a", "gfx11")), False,
         "CDNA3 MI300 (gfx942, fp8 is e4m3fnuz), CDNA2 (gfx90a), RDNA3 (gfx11xx)"),
    _Row("interpreter", lambda a: True, True, "Triton's interpreter on CPU tensors", half_dot=False),
)


@functools.lru_cache(maxsize=None)
def _arch(device: torch.device) -> Tuple[str, str]:
    if device.type == "cpu":
        return "interpreter", "cpu"
    props = torch.cuda.get_device_properties(device)
    if getattr(torch.version, "hip", None):
        return "amd", props.gcnArchName.split(":")[0]
    return "nvidia", f"sm_{props.major}{props.minor}"


def _row(device: torch.device) -> _Row:
    vendor, arch = _arch(device)
    for row in _TABLE:
        if row.vendor == vendor and row.matches(arch):
            return row
    raise ValueError(
        f"device: the Triton backend does not support {vendor} {arch} ({device}); it needs an NVIDIA "
        f"sm_80+ or an AMD CDNA2+/RDNA3+ GPU"
    )


def fp8_dot(device: torch.device) -> bool:
    """True where fp8 e4m3fn operands go into the dot as fp8."""
    override = os.environ.get(FP8_DOT_ENV, "").strip()
    if override in ("0", "1"):
        return override == "1"
    return _row(device).fp8_dot


def half_dot(device: torch.device) -> bool:
    """True where fp16/bf16 operands go into the dot as such."""
    return _row(device).half_dot


def tiles(device: torch.device, d_pad: int, dv_pad: int) -> Tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) of the attention kernel. BLOCK_N must
    divide 128, the per-block V grouping. On the CPU (Triton's interpreter: the tests)
    the key tile is the C++ core's, 128: fp8 P is rounded against the running row max,
    which depends on the key tiling, so with equal tiles the two backends give the same
    P and their outputs can be held to each other closely (tests/test_triton_backend.py)."""
    if device.type == "cpu":
        return 64, 128, 4, 1
    if max(d_pad, dv_pad) >= 256:
        return 64, 64, 8, 2
    return 128, 64, 8, 3
