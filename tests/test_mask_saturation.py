"""Finite float masks stay finite (issue 8, docs/CONTRACT.md §3): ComfyUI builds masks
from -finfo(dtype).max (-3.39e38 in bf16), which overflowed to -inf when the core scaled
it by log2(e), turning rows SDPA treats as "softmax over equal finite scores" (the mean of
V) into empty rows (zeros, LSE -inf). The core now saturates a finite mask value, and a
mask + score sum, to ±FLT_MAX in its log2 units.

Checked on every SIMD path against the scalar one, for fp16, bf16 and fp32 masks that
partly and fully cover rows, against SDPA and the quantize-dequantize fp32 reference, in
output and LSE. The one documented deviation: a row whose every score saturates reports
LSE = -FLT_MAX·ln 2 (about -2.36e38) where SDPA reports about the mask value (down to
-3.4e38); both are finite and weigh nothing in a ring-attention merge.
"""

from __future__ import annotations

import math

import pytest
import reference as ref
import torch

import sageattention
import sageattention._lib as _lib
from sageattention import ops

B, H, NQ, NK, D = 1, 2, 70, 150, 64  # NK spans a full and a partial 128-key tile
FULL_ROWS = slice(0, 5)  # every key covered
PART_ROWS, PART_KEYS = slice(5, 20), slice(30, None)  # keys 30.. covered
LSE_FLOOR = -torch.finfo(torch.float32).max * math.log(2.0)  # -FLT_MAX in log2 units, as natural log
MASK_DTYPES = [torch.float16, torch.bfloat16, torch.float32]
ENTRIES = ["sageattn", "sageattn_qk_int8_pv_fp16_cuda"]  # SIMD softmax (fp8 P) and 16-bit P


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(ref.randn((B, H, n, D), seed=seed + i) for i, n in ((1, NQ), (2, NK), (3, NK)))  # type: ignore


def _comfy_mask(dtype: torch.dtype) -> torch.Tensor:
    """ComfyUI style: 0 where attended, -finfo(dtype).max where not."""
    m = torch.zeros(B, 1, NQ, NK, dtype=dtype)
    m[..., FULL_ROWS, :] = -torch.finfo(dtype).max
    m[..., PART_ROWS, PART_KEYS] = -torch.finfo(dtype).max
    return m


def _masked_softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                              scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SDPA semantics in fp32 on (B, H, N, D): scores + mask, softmax, logsumexp."""
    s = (q.float() @ k.float().transpose(-1, -2)) * scale + mask.float()
    return torch.softmax(s, dim=-1) @ v.float(), torch.logsumexp(s, dim=-1)


def _run(entry: str, q, k, v, mask):
    return getattr(sageattention, entry)(q, k, v, attn_mask=mask, return_lse=True)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("mask_dtype", MASK_DTYPES, ids=lambda d: str(d).split(".")[1])
def test_comfyui_mask_vs_sdpa_and_reference(isa: str, entry: str, mask_dtype: torch.dtype) -> None:
    q, k, v = _inputs()
    mask = _comfy_mask(mask_dtype)
    scale = 1.0 / math.sqrt(D)
    _lib.set_cpu_isa(isa)
    out, lse = _run(entry, q, k, v, mask)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()

    # SDPA on the unquantized inputs
    want = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(),
                                                            attn_mask=mask.float())
    _, want_lse = _masked_softmax_attention(q, k, v, mask, scale)
    assert ref.cosine(out, want) > 0.999, ref.cosine(out, want)
    if mask_dtype != torch.float16:  # -65504 leaves the scores their say; -3.4e38 absorbs them
        mean_v = v.float().mean(dim=2, keepdim=True).expand(B, H, FULL_ROWS.stop, D)
        assert ref.max_abs(out[..., FULL_ROWS, :], mean_v) < 0.03, "fully covered rows: the mean of V"
    # LSE: equal to SDPA's where it is above the floor, the floor where SDPA's is below it
    above = want_lse > LSE_FLOOR
    assert ref.max_abs(lse[above], want_lse[above]) < 0.05
    if (~above).any():
        torch.testing.assert_close(lse[~above], torch.full_like(lse[~above], LSE_FLOOR), rtol=1e-6, atol=0)

    # the quantize-dequantize fp32 reference, same mask semantics
    pv16 = entry == "sageattn_qk_int8_pv_fp16_cuda"
    r = ref.reference_sageattn(q, k, v, "HND")
    q_hat, k_hat = (x.transpose(1, 2) for x in (r.q_hat, r.k_hat))
    v_hat = v.float() if pv16 else r.v_hat.transpose(1, 2)
    ref_out, ref_lse = _masked_softmax_attention(q_hat, k_hat, v_hat, mask, scale)
    ref_lse = ref_lse + (r.lse - torch.logsumexp((q_hat @ k_hat.transpose(-1, -2)) * scale, dim=-1))
    assert ref.cosine(out, ref_out) > 0.9995
    assert ref.max_abs(out, ref_out) < 0.05
    above = ref_lse > LSE_FLOOR
    assert ref.max_abs(lse[above], ref_lse[above]) < 1e-2

    # every SIMD path agrees with the scalar one
    _lib.set_cpu_isa("scalar")
    s_out, s_lse = _run(entry, q, k, v, mask)
    assert ref.max_abs(out, s_out) <= 2 ** -6 * max(1.0, float(s_out.float().abs().max()))
    torch.testing.assert_close(lse, s_lse, rtol=1e-6, atol=1e-4)


def test_low_level_op_saturates(isa: str) -> None:
    """ops.attention_quantized takes the mask straight to the core: fp32 output, fully
    covered rows are exactly the softmax over equal scores (the mean of the dequantized V)."""
    q, k, v = (x.transpose(1, 2) for x in _inputs(seed=5))  # (B, N, H, D)
    qk = ops.quantize_qk(q, k)
    vq = ops.quantize_v(v)
    mask = _comfy_mask(torch.bfloat16)
    _lib.set_cpu_isa(isa)
    out, lse = ops.attention_quantized(qk.q_codes, qk.k_codes, vq.v_codes, qk.q_scale, qk.k_scale, vq.v_scale,
                                       None, return_lse=True, k_mean=qk.k_mean, out_dtype=torch.float32,
                                       attn_mask=mask)
    v_hat = vq.v_codes.float() * vq.v_scale[:, None]  # per-channel scales (B, H, D) -> (B, N, H, D)
    # P is fp8(448·p) with p = 1 for every key: P·V / (448·Nk) is exactly the mean
    full = out[:, FULL_ROWS]
    mean = v_hat.mean(dim=1, keepdim=True).expand_as(full)
    torch.testing.assert_close(full, mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lse[..., FULL_ROWS], torch.full_like(lse[..., FULL_ROWS], LSE_FLOOR), rtol=1e-6,
                               atol=0)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()


def test_both_signs_saturate_in_one_row(isa: str) -> None:
    """+3e38 and -3e38 in one row (both beyond FLT_MAX in log2 units): the SIMD softmax's
    NaN detector must not read two saturated sums of opposite sign as +inf beside -inf.
    SDPA: the +3e38 keys tie (their scores are absorbed), the others weigh nothing."""
    q, k, v = _inputs(seed=9)
    mask = torch.zeros(B, 1, NQ, NK)
    mask[..., 0::2] = 3e38
    mask[..., 1::2] = -3e38
    _lib.set_cpu_isa(isa)
    out, lse = sageattention.sageattn(q, k, v, attn_mask=mask, return_lse=True)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    want = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
    assert ref.max_abs(out, want) < 0.03
    torch.testing.assert_close(lse, torch.full_like(lse, -LSE_FLOOR), rtol=1e-6, atol=0)


@pytest.mark.parametrize("cover", ["full", "part"])
def test_mask_plus_score_overflow_stays_finite(isa: str, cover: str) -> None:
    """-FLT_MAX mask plus a large negative score overflows float: it saturates instead of
    becoming -inf. Every key has the same score (q·k = -|q||k| scaled by 1e32, K not
    smoothed), so covered keys tie at the floor and uncovered keys tie above it."""
    q = ref.randn((B, H, NQ, D), seed=3).abs() + 0.5
    k = (-torch.ones(B, H, 1, D)).expand(B, H, NK, D).to(torch.bfloat16)
    v = ref.randn((B, H, NK, D), seed=4)
    mask = torch.zeros(B, 1, NQ, NK)
    keys = slice(None) if cover == "full" else slice(0, NK - 7)
    mask[..., keys] = -torch.finfo(torch.float32).max
    _lib.set_cpu_isa(isa)
    out, lse = sageattention.sageattn(q, k, v, attn_mask=mask, return_lse=True, sm_scale=1e32, smooth_k=False)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    seen = v.float() if cover == "full" else v.float()[..., NK - 7:, :]
    mean = seen.mean(dim=2, keepdim=True).expand(B, H, NQ, D)
    assert ref.max_abs(out, mean) < 0.05
    if cover == "full":
        torch.testing.assert_close(lse, torch.full_like(lse, LSE_FLOOR), rtol=1e-6, atol=0)
    else:
        assert (lse < -1e30).all() and (lse > LSE_FLOOR).all()


def test_float64_mask_beyond_float32_range_saturates() -> None:
    """A finite float64 value below -FLT_MAX becomes -FLT_MAX on its way to the core,
    never -inf: the same result as an fp32 -finfo.max mask."""
    q, k, v = _inputs()
    m64 = torch.where(_comfy_mask(torch.float32) < 0, torch.tensor(-1e300, dtype=torch.float64), 0.0)
    got = sageattention.sageattn(q, k, v, attn_mask=m64, return_lse=True)
    want = sageattention.sageattn(q, k, v, attn_mask=_comfy_mask(torch.float32), return_lse=True)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    m64[..., 0, 0] = float("-inf")  # -inf still hides its key
    assert torch.isfinite(sageattention.sageattn(q, k, v, attn_mask=m64)).all()


def test_minus_inf_rows_still_empty() -> None:
    """Saturation applies to finite values only: a row of -inf is a row with no key."""
    q, k, v = _inputs()
    mask = torch.zeros(B, 1, NQ, NK, dtype=torch.bfloat16)
    mask[..., FULL_ROWS, :] = float("-inf")
    out, lse = sageattention.sageattn(q, k, v, attn_mask=mask, return_lse=True)
    assert torch.all(out[..., FULL_ROWS, :] == 0)
    assert torch.all(lse[..., FULL_ROWS] == float("-inf"))
    assert torch.isfinite(lse[..., FULL_ROWS.stop:]).all()
