"""sageattn_varlen (issue 4): packed (total, H, D) tensors with cu_seqlens (int32/int64),
causal within each sequence (top-left aligned), GQA, empty sequences, and the
cu_seqlens / max_seqlen errors. Each sequence is quantized on its own with the Triton
variant's recipe (Q per 128, K per 64 tokens, 16-bit P·V), so the result equals
per-sequence ``sageattn_qk_int8_pv_fp16_triton`` calls on the slices."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import pytest
import reference as ref
import torch

import sageattention
from sageattention import sageattn_qk_int8_pv_fp16_triton, sageattn_varlen


def _cu(lengths: Sequence[int], dtype: torch.dtype = torch.int32) -> torch.Tensor:
    out = [0]
    for n in lengths:
        out.append(out[-1] + n)
    return torch.tensor(out, dtype=dtype)


def _packed(lq: Sequence[int], lk: Sequence[int], hq: int = 4, hkv: int = 2, d: int = 64,
            dv: int | None = None, dtype: torch.dtype = torch.bfloat16, seed: int = 0
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dv = d if dv is None else dv
    q = ref.randn((sum(lq), hq, d), dtype=dtype, seed=seed + 1)
    k = ref.randn((sum(lk), hkv, d), dtype=dtype, seed=seed + 2)
    v = ref.randn((sum(lk), hkv, dv), dtype=dtype, seed=seed + 3)
    return q, k, v


def _per_sequence_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: list[int],
                         cu_k: list[int], **kw) -> list[torch.Tensor | None]:
    outs: list[torch.Tensor | None] = []
    for i in range(len(cu_q) - 1):
        q0, q1, k0, k1 = cu_q[i], cu_q[i + 1], cu_k[i], cu_k[i + 1]
        if q1 == q0 or k1 == k0:
            outs.append(None)
            continue
        o = sageattn_qk_int8_pv_fp16_triton(q[None, q0:q1], k[None, k0:k1], v[None, k0:k1],
                                            tensor_layout="NHD", **kw)
        outs.append(o[0])
    return outs


def _sdpa_sequence(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, is_causal: bool,
                   sm_scale: float | None = None) -> torch.Tensor:
    """fp32 attention of one sequence ((n, H, D) tensors), top-left causal, GQA."""
    qh, kh, vh = (x.float().transpose(0, 1) for x in (q, k, v))
    rep = qh.shape[0] // kh.shape[0]
    kh, vh = kh.repeat_interleave(rep, dim=0), vh.repeat_interleave(rep, dim=0)
    mask = torch.ones(qh.shape[1], kh.shape[1], dtype=torch.bool).tril() if is_causal else None
    out = torch.nn.functional.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, scale=sm_scale)
    return out.transpose(0, 1)


LENGTHS = {
    # (q lengths, k lengths): mixed sizes across block boundaries, Nq != Nk, empty segments
    "mixed": ([5, 130, 0, 70, 1, 200], [7, 200, 3, 0, 64, 129]),
    "self": ([33, 128, 257], [33, 128, 257]),
}


# --------------------------------------------------------------------------- #
# Semantics                                                                     #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("cu_dtype", [torch.int32, torch.int64], ids=["int32", "int64"])
@pytest.mark.parametrize("hq,hkv", [(2, 2), (4, 2), (4, 1)], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("lengths", list(LENGTHS))
def test_matches_per_sequence_triton_and_sdpa(lengths: str, is_causal: bool, hq: int, hkv: int,
                                              cu_dtype: torch.dtype) -> None:
    lq, lk = LENGTHS[lengths]
    q, k, v = _packed(lq, lk, hq, hkv)
    cu_q, cu_k = _cu(lq, cu_dtype), _cu(lk, cu_dtype)
    out = sageattn_varlen(q, k, v, cu_q, cu_k, max(lq), max(lk), is_causal=is_causal)
    assert out.shape == (sum(lq), hq, q.shape[2]) and out.dtype == q.dtype
    assert not torch.isnan(out).any()
    cq, ck = cu_q.tolist(), cu_k.tolist()
    per_seq = _per_sequence_triton(q, k, v, cq, ck, is_causal=is_causal)
    for i, want in enumerate(per_seq):
        got = out[cq[i]:cq[i + 1]]
        if cq[i + 1] == cq[i]:
            continue
        if want is None:  # no keys: zeros (docs/CONTRACT.md §1.5)
            assert torch.all(got == 0), f"sequence {i}: zero-length k must give zeros"
            continue
        # same recipe on the same slice: (near-)bitwise equal
        diff = ref.max_abs(got, want)
        assert diff <= 1e-2, f"sequence {i}: max |varlen - per-sequence triton| = {diff}"
        assert (got == want).float().mean() > 0.99, f"sequence {i}: not near-bitwise"
        sd = _sdpa_sequence(q[cq[i]:cq[i + 1]], k[ck[i]:ck[i + 1]], v[ck[i]:ck[i + 1]], is_causal)
        c = ref.cosine(got, sd)
        assert c > 0.999, f"sequence {i}: cosine vs fp32 SDPA {c:.5f}"


def test_causal_is_top_left_per_sequence() -> None:
    """Query i of each sequence sees the sequence's keys 0..i (not bottom-right aligned,
    and not across sequence boundaries)."""
    lq, lk = [20, 50], [60, 30]
    q, k, v = _packed(lq, lk, 2, 2, d=32)
    out = sageattn_varlen(q, k, v, _cu(lq), _cu(lk), 50, 60, is_causal=True)
    # a row's output changes only when keys it sees change: perturb the keys a row
    # must not see and compare
    v2 = v.clone()
    v2[15:60] += 5.0  # seq 0 (k rows 0..59): keys >= 15, invisible to its queries 0..14
    v2[60 + 20:] += 5.0  # seq 1 (k rows 60..89): keys >= 20, invisible to its queries 0..19
    out2 = sageattn_varlen(q, k, v2, _cu(lq), _cu(lk), 50, 60, is_causal=True)
    assert torch.equal(out[:15], out2[:15])
    assert (out[15:20] != out2[15:20]).flatten(1).any(1).all()
    assert torch.equal(out[20:40], out2[20:40])
    assert (out[40:70] != out2[40:70]).flatten(1).any(1).all()
    # each sequence against top-left causal SDPA
    for (q0, q1), (k0, k1) in (((0, 20), (0, 60)), ((20, 70), (60, 90))):
        sd = _sdpa_sequence(q[q0:q1], k[k0:k1], v[k0:k1], True)
        assert ref.cosine(out[q0:q1], sd) > 0.999


def test_sequences_are_independent() -> None:
    lq = lk = [40, 90, 17]
    q, k, v = _packed(lq, lk)
    out = sageattn_varlen(q, k, v, _cu(lq), _cu(lk), 90, 90)
    k2, v2 = k.clone(), v.clone()
    k2[40:130] = ref.randn((90, 2, 64), seed=9)
    v2[40:130] = ref.randn((90, 2, 64), seed=10) * 10
    out2 = sageattn_varlen(q, k2, v2, _cu(lq), _cu(lk), 90, 90)
    assert torch.equal(out[:40], out2[:40])
    assert torch.equal(out[130:], out2[130:])
    assert not torch.equal(out[40:130], out2[40:130])


@pytest.mark.parametrize("dv", [32, 128])
def test_dv_differs_and_options(dv: int) -> None:
    lq, lk = [70, 150], [90, 140]
    q, k, v = _packed(lq, lk, 4, 2, d=64, dv=dv, dtype=torch.float16)
    cq, ck = _cu(lq).tolist(), _cu(lk).tolist()
    for kw in ({}, {"sm_scale": 0.07}, {"smooth_k": False}, {"is_causal": True, "sm_scale": 0.2}):
        out = sageattn_varlen(q, k, v, _cu(lq), _cu(lk), 150, 140, **kw)
        assert out.shape == (220, 4, dv) and out.dtype == torch.float16 and out.is_contiguous()
        for i, want in enumerate(_per_sequence_triton(q, k, v, cq, ck, **kw)):
            got = out[cq[i]:cq[i + 1]]
            assert ref.max_abs(got, want) <= 1e-2, (kw, i)
            sd = _sdpa_sequence(q[cq[i]:cq[i + 1]], k[ck[i]:ck[i + 1]], v[ck[i]:ck[i + 1]],
                                kw.get("is_causal", False), kw.get("sm_scale"))
            assert ref.cosine(got, sd) > 0.999, (kw, i)


def test_sm_scale_default_is_inv_sqrt_d() -> None:
    lq = lk = [30, 50]
    q, k, v = _packed(lq, lk, d=48)
    a = sageattn_varlen(q, k, v, _cu(lq), _cu(lk), 50, 50)
    b = sageattn_varlen(q, k, v, _cu(lq), _cu(lk), 50, 50, sm_scale=1.0 / math.sqrt(48))
    assert torch.equal(a, b)


def test_strided_packed_inputs() -> None:
    """q, k, v as views into one fused (total, 3, H, D) buffer (any strides)."""
    lengths = [25, 100, 3]
    total = sum(lengths)
    qkv = ref.randn((total, 3, 4, 64), seed=3)
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    assert not q.is_contiguous()
    cu = _cu(lengths)
    got = sageattn_varlen(q, k, v, cu, cu, 100, 100, is_causal=True)
    want = sageattn_varlen(q.contiguous(), k.contiguous(), v.contiguous(), cu, cu, 100, 100, is_causal=True)
    assert torch.equal(got, want)


def test_empty_sequences() -> None:
    # zero-length q segments are skipped, zero-length k segments give zeros
    lq, lk = [0, 10, 12, 0], [5, 0, 9, 0]
    q, k, v = _packed(lq, lk, 2, 2, d=32)
    out = sageattn_varlen(q, k, v, _cu(lq), _cu(lk), 12, 9)
    assert out.shape == (22, 2, 32)
    assert torch.all(out[:10] == 0)
    want = _per_sequence_triton(q, k, v, _cu(lq).tolist(), _cu(lk).tolist())[2]
    assert ref.max_abs(out[10:], want) <= 1e-2
    # every segment empty, or no sequence at all
    for lq, lk in (([0, 0], [0, 0]), ([], []), ([0], [4]), ([3], [0])):
        q, k, v = _packed(lq, lk, 2, 2, d=32, dv=16)
        out = sageattn_varlen(q, k, v, _cu(lq), _cu(lk), max(lq, default=0), max(lk, default=0))
        assert out.shape == (sum(lq), 2, 16), (lq, lk)
        assert torch.all(out == 0) and not torch.isnan(out).any(), (lq, lk)


def test_max_seqlen_may_exceed_longest() -> None:
    lq = lk = [10, 20]
    q, k, v = _packed(lq, lk)
    a = sageattn_varlen(q, k, v, _cu(lq), _cu(lk), 20, 20)
    b = sageattn_varlen(q, k, v, _cu(lq), _cu(lk), 4096, 4096)
    assert torch.equal(a, b)


def test_unknown_keywords_ignored() -> None:
    lq = lk = [10, 20]
    q, k, v = _packed(lq, lk)
    base = sageattn_varlen(q, k, v, _cu(lq), _cu(lk), 20, 20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = sageattn_varlen(q, k, v, _cu(lq), _cu(lk), 20, 20, window_size=(-1, -1), foo="bar",
                              alibi_slopes=None, return_attn_probs=False)
    assert torch.equal(out, base)


def test_positional_call_upstream_order() -> None:
    lq, lk = [30, 70], [40, 60]
    q, k, v = _packed(lq, lk)
    a = sageattn_varlen(q, k, v, _cu(lq), _cu(lk), 70, 60, True, 0.1, False)
    b = sageattn_varlen(q, k, v, cu_seqlens_q=_cu(lq), cu_seqlens_k=_cu(lk), max_seqlen_q=70,
                        max_seqlen_k=60, is_causal=True, sm_scale=0.1, smooth_k=False)
    assert torch.equal(a, b)


# --------------------------------------------------------------------------- #
# Errors                                                                        #
# --------------------------------------------------------------------------- #

_LQ, _LK = [10, 20], [15, 5]


def _bad(**override):
    q, k, v = _packed(_LQ, _LK, 2, 2, d=32)
    args = {"q": q, "k": k, "v": v, "cu_seqlens_q": _cu(_LQ), "cu_seqlens_k": _cu(_LK), "max_seqlen_q": 20,
                "max_seqlen_k": 15}
    args.update(override)
    return args


BAD_CASES = {
    "q_not_start_0": ({"cu_seqlens_q": torch.tensor([1, 10, 30], dtype=torch.int32)}, "cu_seqlens_q"),
    "k_not_start_0": ({"cu_seqlens_k": torch.tensor([2, 15, 20], dtype=torch.int32)}, "cu_seqlens_k"),
    "q_decreasing": ({"cu_seqlens_q": torch.tensor([0, 25, 20, 30], dtype=torch.int32),
                          "cu_seqlens_k": torch.tensor([0, 5, 15, 20], dtype=torch.int32)}, "cu_seqlens_q"),
    "k_decreasing": ({"cu_seqlens_k": torch.tensor([0, 16, 15, 20], dtype=torch.int32),
                          "cu_seqlens_q": torch.tensor([0, 5, 10, 30], dtype=torch.int32)}, "cu_seqlens_k"),
    "q_short_end": ({"cu_seqlens_q": torch.tensor([0, 10, 29], dtype=torch.int32)}, "cu_seqlens_q"),
    "q_past_end": ({"cu_seqlens_q": torch.tensor([0, 10, 31], dtype=torch.int32)}, "cu_seqlens_q"),
    "k_short_end": ({"cu_seqlens_k": torch.tensor([0, 15, 19], dtype=torch.int32)}, "cu_seqlens_k"),
    "q_float": ({"cu_seqlens_q": torch.tensor([0.0, 10.0, 30.0])}, "cu_seqlens_q"),
    "k_float": ({"cu_seqlens_k": torch.tensor([0.0, 15.0, 20.0], dtype=torch.float64)}, "cu_seqlens_k"),
    "q_int16": ({"cu_seqlens_q": torch.tensor([0, 10, 30], dtype=torch.int16)}, "cu_seqlens_q"),
    "q_2d": ({"cu_seqlens_q": torch.tensor([[0, 10, 30]], dtype=torch.int32)}, "cu_seqlens_q"),
    "k_2d": ({"cu_seqlens_k": torch.tensor([[0], [15], [20]], dtype=torch.int32)}, "cu_seqlens_k"),
    "q_empty": ({"cu_seqlens_q": torch.tensor([], dtype=torch.int32)}, "cu_seqlens_q"),
    "length_mismatch": ({"cu_seqlens_k": torch.tensor([0, 15, 18, 20], dtype=torch.int32)}, "cu_seqlens"),
    "max_seqlen_q_small": ({"max_seqlen_q": 19}, "max_seqlen_q"),
    "max_seqlen_k_small": ({"max_seqlen_k": 14}, "max_seqlen_k"),
    "max_seqlen_negative": ({"max_seqlen_q": -1}, "max_seqlen_q"),
    "q_4d": ({"q": torch.zeros(1, 30, 2, 32, dtype=torch.bfloat16)}, "q"),
    "gqa_heads": ({"q": torch.zeros(30, 3, 32, dtype=torch.bfloat16)}, "heads"),
    "k_v_lengths": ({"v": torch.zeros(19, 2, 32, dtype=torch.bfloat16)}, "k, v"),
    "head_dim_257": ({"q": torch.zeros(30, 2, 257, dtype=torch.bfloat16),
                          "k": torch.zeros(20, 2, 257, dtype=torch.bfloat16),
                          "v": torch.zeros(20, 2, 257, dtype=torch.bfloat16)}, "257"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_arguments_value_error(case: str) -> None:
    override, match = BAD_CASES[case]
    with pytest.raises(ValueError, match=match):
        sageattn_varlen(**_bad(**override))


def test_bad_dtype_type_error() -> None:
    with pytest.raises(TypeError):
        sageattn_varlen(**_bad(q=torch.zeros(30, 2, 32, dtype=torch.float32)))
    with pytest.raises(TypeError):
        sageattn_varlen(**_bad(v=torch.zeros(20, 2, 32, dtype=torch.float16)))
