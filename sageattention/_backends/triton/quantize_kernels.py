"""Quantizer kernels (docs/CONTRACT.md §2): codes and scales bit for bit equal to the C++
core's on the same input.

Token groupings (block, groups, stride) put token n of a block into group
((n % block) // stride) % groups. One program owns one block of one (b, h) slice: it
folds row amaxes into the block's group scales, then encodes the block, so every token
grouping is one kernel. A per-tensor scale spans every (b, h): partial amaxes, one
reduction, then the encode pass.

NaN inputs make their group's scale NaN, as on the CPU (canonical NaN here; the CPU
keeps the input NaN's payload).
"""
from __future__ import annotations

import triton
import triton.language as tl

from .numerics import div_rn, fp8_e4m3_bits, int8_code, load_f32, scale_from_amax


@triton.jit
def _load_rows(X, x_off, n, row_ok, d, D, sxn, sxd, MEAN, mean_off, smd, HAS_MEAN: tl.constexpr,
               HALF_KIND: tl.constexpr):
    ok = row_ok[:, None] & (d < D)[None, :]
    x = load_f32(X + x_off + n.to(tl.int64)[:, None] * sxn + d[None, :] * sxd, ok, HALF_KIND)
    if HAS_MEAN:
        mean = tl.load(MEAN + mean_off + d * smd, mask=d < D, other=0.0)
        x = x - mean[None, :]
    return tl.where(ok, x, 0.0)


@triton.jit
def _fold_amax(amax, nan, x, AXIS: tl.constexpr):
    """The running (max |x|, 1 where a NaN was seen) after one more tile x, reduced along
    AXIS. Max drops NaN on some targets, so NaN is tracked on its own."""
    amax = tl.maximum(amax, tl.max(tl.abs(x), axis=AXIS))
    nan = tl.maximum(nan, tl.max((x != x).to(tl.int32), axis=AXIS))
    return amax, nan


@triton.jit
def _scale_or_nan(amax, nan, qmax):
    """A group's scale from its amax; NaN where the group held a NaN, as on the CPU."""
    return tl.where(nan > 0, float("nan"), scale_from_amax(amax, qmax))


@triton.jit
def _program_rows(H, TILE_T: tl.constexpr):
    """Program (bh, tile) of a per-tensor pass: b, h and its TILE_T token indices."""
    bh = tl.program_id(0)
    return bh, bh // H, bh % H, tl.program_id(1) * TILE_T + tl.arange(0, TILE_T)


@triton.jit
def _rows_amax(X, x_off, n, row_ok, D, sxn, sxd, MEAN, mean_off, smd,
               HAS_MEAN: tl.constexpr, HALF_KIND: tl.constexpr, TILE_T: tl.constexpr, TILE_D: tl.constexpr):
    """Per row: (max |x - mean|, 1 where the row holds a NaN)."""
    amax = tl.zeros([TILE_T], dtype=tl.float32)
    nan = tl.zeros([TILE_T], dtype=tl.int32)
    for d0 in range(0, D, TILE_D):
        d = d0 + tl.arange(0, TILE_D)
        x = _load_rows(X, x_off, n, row_ok, d, D, sxn, sxd, MEAN, mean_off, smd, HAS_MEAN, HALF_KIND)
        amax, nan = _fold_amax(amax, nan, x, 1)
    return amax, nan


@triton.jit
def _encode_rows(X, x_off, n, row_ok, D, sxn, sxd, MEAN, mean_off, smd, C, c_off, scn, scd, row_scale,
                 HAS_MEAN: tl.constexpr, HALF_KIND: tl.constexpr, FP8: tl.constexpr, TILE_D: tl.constexpr):
    for d0 in range(0, D, TILE_D):
        d = d0 + tl.arange(0, TILE_D)
        x = _load_rows(X, x_off, n, row_ok, d, D, sxn, sxd, MEAN, mean_off, smd, HAS_MEAN, HALF_KIND)
        y = div_rn(x, row_scale[:, None])
        ok = row_ok[:, None] & (d < D)[None, :]
        ptrs = C + c_off + n.to(tl.int64)[:, None] * scn + d[None, :] * scd
        if FP8:
            tl.store(ptrs, fp8_e4m3_bits(y).to(tl.uint8), mask=ok)
        else:
            tl.store(ptrs, int8_code(y), mask=ok)


@triton.jit
def quantize_blocks_kernel(X, MEAN, C, S, H, N, D,
                           sxb, sxn, sxh, sxd, smb, smh, smd, scb, scn, sch, scd, ssb, ssh, ssg,
                           block, stride, qmax,
                           GROUPS: tl.constexpr, HAS_MEAN: tl.constexpr, HALF_KIND: tl.constexpr, FP8: tl.constexpr,
                           TILE_T: tl.constexpr, TILE_D: tl.constexpr):
    """Program (bh, blk): the scales of block blk's GROUPS groups, then its codes."""
    bh = tl.program_id(0)
    blk = tl.program_id(1)
    b = bh // H
    h = bh % H
    t = tl.arange(0, TILE_T)
    n = blk * block + t
    row_ok = (t < block) & (n < N)
    x_off = b.to(tl.int64) * sxb + h * sxh
    mean_off = b * smb + h * smh
    amax, nan = _rows_amax(X, x_off, n, row_ok, D, sxn, sxd, MEAN, mean_off, smd, HAS_MEAN, HALF_KIND, TILE_T, TILE_D)
    group = (t // stride) % GROUPS
    row_scale = tl.zeros([TILE_T], dtype=tl.float32)
    for g in tl.static_range(GROUPS):
        member = row_ok & (group == g)
        g_amax = tl.max(tl.where(member, amax, 0.0), axis=0)
        g_nan = tl.max(tl.where(member, nan, 0), axis=0)
        scale = _scale_or_nan(g_amax, g_nan, qmax)
        tl.store(S + b * ssb + h * ssh + (blk * GROUPS + g) * ssg, scale)
        row_scale = tl.where(group == g, scale, row_scale)
    c_off = b.to(tl.int64) * scb + h * sch
    _encode_rows(X, x_off, n, row_ok, D, sxn, sxd, MEAN, mean_off, smd, C, c_off, scn, scd,
                 row_scale, HAS_MEAN, HALF_KIND, FP8, TILE_D)


@triton.jit
def tensor_amax_partials_kernel(X, MEAN, P, H, N, D, sxb, sxn, sxh, sxd, smb, smh, smd,
                                HAS_MEAN: tl.constexpr, HALF_KIND: tl.constexpr, TILE_T: tl.constexpr,
                                TILE_D: tl.constexpr):
    """Program (bh, tile): amax of TILE_T rows into P[bh, tile], or NaN."""
    bh, b, h, n = _program_rows(H, TILE_T)
    amax, nan = _rows_amax(X, b.to(tl.int64) * sxb + h * sxh, n, n < N, D, sxn, sxd, MEAN, b * smb + h * smh,
                           smd, HAS_MEAN, HALF_KIND, TILE_T, TILE_D)
    part = tl.where(tl.max(nan, axis=0) > 0, float("nan"), tl.max(amax, axis=0))
    tl.store(P + bh * tl.num_programs(1) + tl.program_id(1), part)


@triton.jit
def tensor_scale_kernel(P, S, count, qmax, TILE: tl.constexpr):
    """One program: the per-tensor scale from every partial amax."""
    amax = tl.zeros([TILE], dtype=tl.float32)
    nan = tl.zeros([TILE], dtype=tl.int32)
    for i0 in range(0, count, TILE):
        i = i0 + tl.arange(0, TILE)
        p = tl.load(P + i, mask=i < count, other=0.0)  # partial amaxes: >= 0, or NaN
        amax, nan = _fold_amax(amax, nan, p[None, :], 0)
    tl.store(S, _scale_or_nan(tl.max(amax, axis=0), tl.max(nan, axis=0), qmax))


@triton.jit
def encode_tensor_kernel(X, MEAN, C, S, H, N, D, sxb, sxn, sxh, sxd, smb, smh, smd, scb, scn, sch, scd,
                         HAS_MEAN: tl.constexpr, HALF_KIND: tl.constexpr, FP8: tl.constexpr, TILE_T: tl.constexpr,
                         TILE_D: tl.constexpr):
    """Program (bh, tile): codes of TILE_T rows under the one per-tensor scale S[0]."""
    _, b, h, n = _program_rows(H, TILE_T)
    row_scale = tl.zeros([TILE_T], dtype=tl.float32) + tl.load(S)
    _encode_rows(X, b.to(tl.int64) * sxb + h * sxh, n, n < N, D, sxn, sxd, MEAN, b * smb + h * smh, smd,
                 C, b.to(tl.int64) * scb + h * sch, scn, scd, row_scale, HAS_MEAN, HALF_KIND, FP8, TILE_D)


@triton.jit
def channel_mean_kernel(X, M, H, N, D, sxb, sxn, sxh, sxd, smb, smh, smd,
                        HALF_KIND: tl.constexpr, TILE_T: tl.constexpr, TILE_D: tl.constexpr):
    """Program (bh, d tile): mean over tokens, summed in fp64 and rounded once to fp32."""
    bh = tl.program_id(0)
    b = bh // H
    h = bh % H
    d = tl.program_id(1) * TILE_D + tl.arange(0, TILE_D)
    acc = tl.zeros([TILE_D], dtype=tl.float64)
    x_off = b.to(tl.int64) * sxb + h * sxh
    for n0 in range(0, N, TILE_T):
        n = n0 + tl.arange(0, TILE_T)
        ok = (n < N)[:, None] & (d < D)[None, :]
        x = load_f32(X + x_off + n.to(tl.int64)[:, None] * sxn + d[None, :] * sxd, ok, HALF_KIND)
        acc += tl.sum(x.to(tl.float64), axis=0)
    mean = (acc / tl.maximum(N, 1).to(tl.float64)).to(tl.float32)
    mean = tl.where(mean == mean, mean, float("nan"))
    tl.store(M + b * smb + h * smh + d * smd, mean, mask=d < D)


@triton.jit
def quantize_channels_kernel(X, C, S, H, N, D, sxb, sxn, sxh, sxd, scb, scn, sch, scd, ssb, ssh, ssd,
                             HALF_KIND: tl.constexpr, TILE_T: tl.constexpr, TILE_D: tl.constexpr):
    """Program (bh, d tile): per-channel fp8 scales over all tokens, then the codes."""
    bh = tl.program_id(0)
    b = bh // H
    h = bh % H
    d = tl.program_id(1) * TILE_D + tl.arange(0, TILE_D)
    x_off = b.to(tl.int64) * sxb + h * sxh
    c_off = b.to(tl.int64) * scb + h * sch
    amax = tl.zeros([TILE_D], dtype=tl.float32)
    nan = tl.zeros([TILE_D], dtype=tl.int32)
    for n0 in range(0, N, TILE_T):
        n = n0 + tl.arange(0, TILE_T)
        ok = (n < N)[:, None] & (d < D)[None, :]
        x = load_f32(X + x_off + n.to(tl.int64)[:, None] * sxn + d[None, :] * sxd, ok, HALF_KIND)
        amax, nan = _fold_amax(amax, nan, x, 0)
    scale = _scale_or_nan(amax, nan, 448.0)
    tl.store(S + b * ssb + h * ssh + d * ssd, scale, mask=d < D)
    for n0 in range(0, N, TILE_T):
        n = n0 + tl.arange(0, TILE_T)
        ok = (n < N)[:, None] & (d < D)[None, :]
        x = load_f32(X + x_off + n.to(tl.int64)[:, None] * sxn + d[None, :] * sxd, ok, HALF_KIND)
        code = fp8_e4m3_bits(div_rn(x, scale[None, :])).to(tl.uint8)
        tl.store(C + c_off + n.to(tl.int64)[:, None] * scn + d[None, :] * scd, code, mask=ok)
