"""The fused forward attention kernel (docs/CONTRACT.md §3): 8-bit Q·Kᵀ, online softmax in
base 2 and fp32, P·V in one of three modes, one program per (query tile, b, hq).

P·V modes (PV_MODE), chosen per device in capability.py:
  0  fp8 dot: P = fp8(448·p) times V's fp8 codes (GPUs with an OCP e4m3 dot);
  1  the same numbers through a 16-bit dot: P rounded onto the e4m3 grid and V's codes
     decoded, both exact in fp16, so the products equal the fp8 dot's (other GPUs);
  2  16-bit V (upstream's pv_fp16 variants): P in V's dtype (HALF_DOT: a 16-bit dot, else
     the same exact products through an fp32 dot; the interpreter's bf16 dot is wrong).
QK_DOT_FP8 likewise says whether fp8 Q/K codes enter an fp8 dot or an exact fp16 one.

Dot dims are padded to powers of two >= 16 with masked loads, so the tiles are ones a
GPU compiles; nothing reads out of bounds.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .numerics import (F32_MAX, LN2, LOG2E, as_fp8, div_rn, fp8_e4m3_bits, fp8_e4m3_round, fp8_e4m3_value,
                       bf16_round, half_bits, load_f32)


@triton.jit
def _load_codes(ptrs, ok, FP8: tl.constexpr, DOT_FP8: tl.constexpr):
    """int8 codes as int8; fp8 codes (uint8 bits) as fp8e4nv or as exact fp16."""
    if FP8:
        bits = tl.load(ptrs, mask=ok, other=0).to(tl.int32)
        if DOT_FP8:
            return as_fp8(bits)
        return fp8_e4m3_value(bits).to(tl.float16)
    return tl.load(ptrs, mask=ok, other=0)


@triton.jit
def _group_of(n, block, groups, stride):
    return (n // block) * groups + ((n % block) // stride) % groups


@triton.jit
def _saturated(x, a, b):
    """x = a ∘ b as ±FLT_MAX where it overflowed from finite a and b (docs/CONTRACT.md §3.4)."""
    overflow = (tl.abs(x) == float("inf")) & (tl.abs(a) < float("inf")) & (tl.abs(b) < float("inf"))
    return tl.where(overflow, tl.where(x < 0, -F32_MAX, F32_MAX), x)


@triton.jit
def attention_kernel(
        Q, K, V, QS, KS, VS, KMEAN, MASK, O, OS, LSE,
        sqb, sqn, sqh, sqd, skb, skn, skh, skd, svb, svn, svh, svd,
        sqsb, sqsh, sqsg, sksb, sksh, sksg, svsb, svsh, svsg,
        skmb, skmh, skmd, smb, smh, smi, smj,
        sob, son, soh, sod, sosb, sosn, sosh, slb, slh, sln,
        Hq, Nq, Nk, D, DV, heads_per_kv,
        q_block, q_groups, q_stride, k_block, k_groups, k_stride, v_block,
        sm_scale, q_side, k_side,
        QK_FP8: tl.constexpr, QK_DOT_FP8: tl.constexpr, HALF_DOT: tl.constexpr, V_KIND: tl.constexpr, PV_MODE: tl.constexpr, V_PER_CHANNEL: tl.constexpr,
        CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, HAS_KMEAN: tl.constexpr, RETURN_LSE: tl.constexpr,
        FP8_OUT: tl.constexpr, OUT_KIND: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D_PAD: tl.constexpr,
        DV_PAD: tl.constexpr):
    i0 = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    b = bh // Hq
    hq = bh % Hq
    hkv = hq // heads_per_kv
    b64 = b.to(tl.int64)  # offsets past 2^31 elements: token and batch terms in int64
    hq64 = hq.to(tl.int64)

    i = i0 + tl.arange(0, BLOCK_M)
    i64 = i.to(tl.int64)
    row_ok = i < Nq
    d = tl.arange(0, D_PAD)
    c = tl.arange(0, DV_PAD)
    q_ptrs = Q + b64 * sqb + hq * sqh + i64[:, None] * sqn + d[None, :] * sqd
    q = _load_codes(q_ptrs, row_ok[:, None] & (d < D)[None, :], QK_FP8, QK_DOT_FP8)
    q_scale = tl.load(QS + b * sqsb + hq * sqsh + _group_of(i, q_block, q_groups, q_stride) * sqsg,
                      mask=row_ok, other=0.0)
    # scores in log2 units: sm_scale·log2(e) = q_side · k_side, k_side a power of two
    # (ops._split_score_scale), so no product overflows before k_scale brings it back
    row_scale = _saturated(q_scale * q_side, q_scale, q_scale)  # q_side is finite

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, DV_PAD], dtype=tl.float32)

    k_base = K + b64 * skb + hkv * skh
    v_base = V + b64 * svb + hkv * svh
    hi = Nk
    if CAUSAL:  # top-left aligned: query i sees keys j <= i
        hi = tl.minimum(Nk, i0 + BLOCK_M)
    for j0 in range(0, hi, BLOCK_N):
        j = j0 + tl.arange(0, BLOCK_N)
        j64 = j.to(tl.int64)
        col_ok = j < Nk
        kt = _load_codes(k_base + j64[None, :] * skn + d[:, None] * skd, col_ok[None, :] & (d < D)[:, None],
                         QK_FP8, QK_DOT_FP8)
        k_scale = tl.load(KS + b * sksb + hkv * sksh + _group_of(j, k_block, k_groups, k_stride) * sksg,
                          mask=col_ok, other=0.0)
        k_scale = _saturated(k_scale * k_side, k_scale, k_scale)  # k_side is finite
        s = tl.dot(q, kt).to(tl.float32) * row_scale[:, None] * k_scale[None, :]
        s = _saturated(s, row_scale[:, None], k_scale[None, :])  # finite scales: finite codes
        keep = col_ok[None, :]
        if CAUSAL:
            keep = keep & (j[None, :] <= i[:, None])
        if MASK_KIND == 1:  # bool: True keeps
            mv = tl.load(MASK + b64 * smb + hq64 * smh + i64[:, None] * smi + j64[None, :] * smj,
                         mask=row_ok[:, None] & col_ok[None, :], other=0)
            keep = keep & (mv != 0)
        if MASK_KIND == 2:  # float, added in log2 units; finite stays finite (docs/CONTRACT.md §3):
            # mask·log2(e) and score + mask saturate to ±FLT_MAX, as in the C++ core
            mv = tl.load(MASK + b64 * smb + hq64 * smh + i64[:, None] * smi + j64[None, :] * smj,
                         mask=row_ok[:, None] & col_ok[None, :], other=0.0)
            add = mv * LOG2E
            add = tl.where(tl.abs(mv) < float("inf"), tl.minimum(tl.maximum(add, -F32_MAX), F32_MAX), add)
            s = _saturated(s + add, s, add)
        s = tl.where(keep, s, float("-inf"))

        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        empty = m_new == float("-inf")  # no visible key yet: p = 0, alpha = 1
        m_use = tl.where(empty, 0.0, m_new)
        alpha = tl.where(empty, 1.0, tl.exp2(m_i - m_use))
        p = tl.exp2(s - m_use[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        m_i = m_new

        v_ptrs = v_base + j64[:, None] * svn + c[None, :] * svd
        v_ok = col_ok[:, None] & (c < DV)[None, :]
        if PV_MODE == 2:
            # V arrives as int16 bits (V_KIND 1: fp16, 2: bf16); P is rounded to V's format.
            if V_KIND == 2:
                p_half = bf16_round(p)
            else:
                p_half = p.to(tl.float16).to(tl.float32)
            if HALF_DOT:  # the cast of a value already on the grid is exact
                half = tl.bfloat16 if V_KIND == 2 else tl.float16
                v = tl.load(v_ptrs, mask=v_ok, other=0).to(half, bitcast=True)
                pv = tl.dot(p_half.to(half), v)
            else:
                pv = tl.dot(p_half, load_f32(v_ptrs, v_ok, V_KIND), input_precision="ieee")
        else:
            v_bits = tl.load(v_ptrs, mask=v_ok, other=0).to(tl.int32)
            if PV_MODE == 0:
                pv = tl.dot(as_fp8(fp8_e4m3_bits(p * 448.0)), as_fp8(v_bits))
            else:
                pv = tl.dot(fp8_e4m3_round(p * 448.0).to(tl.float16), fp8_e4m3_value(v_bits).to(tl.float16))
            if not V_PER_CHANNEL:  # one V scale per key tile (BLOCK_N divides the V block)
                pv = pv * tl.load(VS + b * svsb + hkv * svsh + (j0 // v_block) * svsg)
        acc = acc * alpha[:, None] + pv

    empty = m_i == float("-inf")
    p_unit = 1.0 if PV_MODE == 2 else 448.0
    inv = tl.where(empty, 0.0, 1.0 / (p_unit * tl.where(empty, 1.0, l_i)))
    out = acc * inv[:, None]
    if PV_MODE != 2:
        if V_PER_CHANNEL:
            out = out * tl.load(VS + b * svsb + hkv * svsh + c * svsg, mask=c < DV, other=0.0)[None, :]
    out_ok = row_ok[:, None] & (c < DV)[None, :]
    o_ptrs = O + b64 * sob + i64[:, None] * son + hq * soh + c[None, :] * sod
    if FP8_OUT:  # per-row scale (docs/CONTRACT.md §3)
        amax = tl.max(tl.where(out_ok, tl.abs(out), 0.0), axis=1)
        o_scale = div_rn(tl.maximum(amax, 1e-12), 448.0)
        tl.store(OS + b64 * sosb + i64 * sosn + hq * sosh, o_scale, mask=row_ok)
        tl.store(o_ptrs, fp8_e4m3_bits(div_rn(out, o_scale[:, None])).to(tl.uint8), mask=out_ok)
    else:
        if OUT_KIND == 0:
            tl.store(o_ptrs, out, mask=out_ok)
        else:  # O is an int16 view of fp16 / bf16
            tl.store(o_ptrs, half_bits(out, tl.bfloat16 if OUT_KIND == 2 else tl.float16), mask=out_ok)
    if RETURN_LSE:
        lse = (m_i + tl.log2(tl.where(empty, 1.0, l_i))) * LN2
        if HAS_KMEAN:  # smoothing removed q̂·mean_k from every score of the row
            if QK_FP8:
                qf = fp8_e4m3_value(tl.load(q_ptrs, mask=row_ok[:, None] & (d < D)[None, :], other=0).to(tl.int32))
            else:
                qf = q.to(tl.float32)
            mean = tl.load(KMEAN + b * skmb + hkv * skmh + d * skmd, mask=d < D, other=0.0)
            scaled_q = _saturated(sm_scale * q_scale, q_scale, q_scale)  # sm_scale is finite
            dot_mean = tl.sum(qf * mean[None, :], axis=1)
            shift = _saturated(scaled_q * dot_mean, scaled_q, dot_mean)
            lse = _saturated(lse + shift, lse, shift)
        lse = tl.where(empty, float("-inf"), lse)
        tl.store(LSE + b64 * slb + hq64 * slh + i64 * sln, lse, mask=row_ok)
