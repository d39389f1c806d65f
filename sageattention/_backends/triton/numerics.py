"""Element formats in Triton, bit for bit as the C++ core computes them
(docs/CONTRACT.md §2: scale = max(amax, 1e-12) / QMAX with a true fp32 division; codes
round half to even and saturate).

Nothing here relies on Triton's fp32 -> fp8 or fp32 -> bf16 casts: the interpreter's is wrong (ties away
from zero, the mantissa carry dropped, no saturation) and sm_89 has been reported wrong
too, and the interpreter's bf16 cast truncates and flushes subnormals. Codes are computed as bits with integer operations and stored through uint8 views,
or bitcast to fp8 for a dot. Division uses div_rn because `/` on fp32 lowers to an
approximate division on NVIDIA GPUs.
"""
from __future__ import annotations

import triton
import triton.language as tl

FP8_MAX = 448.0
INT8_MAX = 127.0
LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
F32_MAX = 3.4028234663852886e38


@triton.jit
def div_rn(a, b):
    """IEEE fp32 division, round to nearest even."""
    return tl.math.div_rn(a, b)


@triton.jit
def rint(y):
    """Round half to even to an integer (torch.round / nearbyint). Adding 1.5 * 2^23 puts
    the units digit at the last mantissa bit, so the FPU's own rounding does the work;
    |y| >= 2^22 is already an integer."""
    r = (y + 12582912.0) - 12582912.0
    return tl.where(tl.abs(y) >= 4194304.0, y, r)


@triton.jit
def scale_from_amax(amax, qmax):
    return div_rn(tl.maximum(amax, 1e-12), qmax)


@triton.jit
def int8_code(y):
    """RNE, saturated to ±127; NaN -> 0. Returns int8."""
    c = rint(tl.minimum(tl.maximum(y, -127.0), 127.0))
    return tl.where(y == y, c, 0.0).to(tl.int8)


@triton.jit
def fp8_e4m3_bits(x):
    """fp8 e4m3fn code of fp32 x as int32 in [0, 255]: round half to even, saturating to
    ±448 (±inf too), NaN -> 0x7F with x's sign bit. Mirrors numeric.h f32_to_fp8_e4m3."""
    u = x.to(tl.int32, bitcast=True)
    sign = (u >> 24) & 0x80
    a = u & 0x7FFFFFFF
    # Below 2^-6 the codes are multiples of 2^-9: scale (exactly) and round to integer.
    small = tl.minimum(a, 0x3C800000).to(tl.float32, bitcast=True)  # other lanes: unused
    sub = rint(small * 512.0).to(tl.int32)
    # Normal: keep 3 mantissa bits, half to even on the 20 dropped bits, carry included.
    r = a + 0x7FFFF + ((a >> 20) & 1)
    normal = tl.minimum((((r >> 23) - 120) << 3) | ((r >> 20) & 7), 0x7E)
    code = tl.where(a < 0x3C800000, sub, normal)
    code = tl.where(a >= 0x43E00000, 0x7E, code)
    code = tl.where(a > 0x7F800000, 0x7F, code)
    return sign | code


@triton.jit
def fp8_e4m3_value(c):
    """The fp32 value of fp8 e4m3fn code bits c (int32 in [0, 255]); NaN for 0x7F/0xFF."""
    sign = (c & 0x80) << 24
    e = (c >> 3) & 0xF
    m = c & 0x7
    sub = (m.to(tl.float32) * 0.001953125).to(tl.int32, bitcast=True)
    normal = ((e + 120) << 23) | (m << 20)
    bits = tl.where(e == 0, sub, normal)
    bits = tl.where((e == 0xF) & (m == 0x7), 0x7FC00000, bits)
    return (bits | sign).to(tl.float32, bitcast=True)


@triton.jit
def fp8_e4m3_round(x):
    """x rounded onto the e4m3fn grid (saturated, NaN kept), as fp32: every fp8 value is
    exact in fp16 too, so a 16-bit dot of these equals an fp8 dot."""
    return fp8_e4m3_value(fp8_e4m3_bits(x))


@triton.jit
def as_fp8(bits):
    """Code bits (int32) as an fp8e4nv tensor for tl.dot, with no value conversion."""
    return bits.to(tl.uint8).to(tl.float8e4nv, bitcast=True)


@triton.jit
def load_f32(ptrs, mask, HALF_KIND: tl.constexpr):
    """Load 16-bit floats that arrive as int16 bits (HALF_KIND 1: fp16, 2: bf16) as fp32.
    bf16 is shifted into the high half, exact everywhere (the interpreter's own bf16 ->
    fp32 conversion flushes subnormals)."""
    bits = tl.load(ptrs, mask=mask, other=0)
    if HALF_KIND == 2:
        return (bits.to(tl.int32) << 16).to(tl.float32, bitcast=True)
    return bits.to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def bf16_round(x):
    """fp32 x rounded half to even onto the bf16 grid, as fp32 (NaN stays NaN)."""
    u = x.to(tl.int32, bitcast=True)
    r = (u + 0x7FFF + ((u >> 16) & 1)) & -65536  # keep the top 16 bits
    r = tl.where((u & 0x7FFFFFFF) > 0x7F800000, u | 0x400000, r)
    return r.to(tl.float32, bitcast=True)


@triton.jit
def half_bits(x, DTYPE: tl.constexpr):
    """fp32 -> the int16 bits of fp16 or bf16, round half to even. Stored through int16
    views: the interpreter's bf16 cast truncates and flushes subnormals."""
    if DTYPE == tl.bfloat16:
        return (bf16_round(x).to(tl.int32, bitcast=True) >> 16).to(tl.int16)
    return x.to(tl.float16).to(tl.int16, bitcast=True)
