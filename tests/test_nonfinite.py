"""Non-finite inputs (hardening, issue 5 item 3; specification in SECURITY.md,
"Non-finite inputs").

NaN or ±Inf in q, k, v never crashes. The quantizers fold amax NaN-propagating, so a
group that holds a NaN/Inf gets a NaN/Inf scale, and every code of the group decodes to
NaN (code · NaN, or 0 · Inf). The contract pinned here:

- Q: the output rows (and LSE) of the poisoned token's Q scale group are NaN: the same
  128-token block of the same (b, head) for the block recipes, everything for per-tensor.
- K: with smooth_k=True the K mean of the poisoned channel is NaN, which poisons every
  K group of that (b, kv head): every query head reading it is NaN (all rows). With
  smooth_k=False only the poisoned token's K group is: rows that see at least one key
  of that group are NaN. Per-tensor: everything.
- V: per-channel V scales (default, per-block): that channel of every row of the query
  heads of that (b, kv head) is NaN, other channels exact; per-block V: all channels of
  the rows that see at least one key of that 128-token block; per-tensor: everything.
  The LSE does not depend on V.
- Everything else is bitwise identical to the run without the poisoned element.
- Additive masks: -inf hides a key (a row with every key hidden gives 0 and LSE -inf);
  a NaN or +inf mask entry makes its row NaN.
- The 16-bit P·V variants and varlen (V unquantized): a NaN/Inf in v[t, c] makes channel c
  of the rows of that head that see key t NaN; q/k as above.

History: the online softmax used to skip NaN when taking the row max, so a row whose
scores were all NaN looked fully masked (0, LSE -inf) and an all-NaN first key tile was
dropped silently; fixed by the NaN-propagating max in every ISA's softmax.
"""
from __future__ import annotations

import functools
import math

import pytest
import torch

import sageattention
from sageattention import sageattn

B, HQ, HKV, NQ, NK, D = 2, 4, 2, 256, 256, 16
REP = HQ // HKV
RECIPES = {"per_thread": (128, 16, -1, 1), "per_block": (128, 128, -1, 1), "per_block_v": (128, 128, -1, 128),
           "per_tensor": (-1, -1, -1, -1)}
K_GROUPING = {"per_thread": (128, 8, 8), "per_block": (128, 1, 128), "per_block_v": (128, 1, 128), "per_tensor": None}
# The poisoned element (HND index): batch 1, head 1 (q) / kv head 1 (k, v), token 140, channel 3.
PB, PH, PT, PC = 1, 1, 140, 3

def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, HQ, NQ, D, generator=g).to(torch.bfloat16)
    k = torch.randn(B, HKV, NK, D, generator=g).to(torch.bfloat16)
    v = torch.randn(B, HKV, NK, D, generator=g).to(torch.bfloat16)
    return q, k, v


def _k_group_members(recipe: str) -> torch.Tensor:
    """Tokens that share PT's K scale group (smooth_k=False)."""
    grouping = K_GROUPING[recipe]
    n = torch.arange(NK)
    if grouping is None:
        return n
    block, groups, stride = grouping
    g = (n // block) * groups + ((n % block) // stride) % groups
    return n[g == g[PT]]


def _affected(which: str, recipe: str, causal: bool, smooth_k: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(out_mask (B, HQ, NQ, D), lse_mask (B, HQ, NQ)): the entries the spec makes NaN."""
    out = torch.zeros(B, HQ, NQ, D, dtype=torch.bool)
    rows = torch.arange(NQ)
    heads = slice(PH * REP, (PH + 1) * REP)  # query heads of kv head PH
    if recipe == "per_tensor":
        out[:] = True
    elif which == "q":
        blk = PT // 128
        out[PB, PH, blk * 128:(blk + 1) * 128] = True
    elif which == "k":
        if smooth_k:
            out[PB, heads] = True
        else:
            first = int(_k_group_members(recipe).min())
            seen = rows >= first if causal else torch.ones(NQ, dtype=torch.bool)
            out[PB, heads, seen] = True
    elif recipe == "per_block_v":
        first = (PT // 128) * 128
        seen = rows >= first if causal else torch.ones(NQ, dtype=torch.bool)
        out[PB, heads, seen] = True
    else:  # per-channel V
        out[PB, heads, :, PC] = True
    lse = out.any(dim=-1) if which in "qk" else torch.zeros(B, HQ, NQ, dtype=torch.bool)
    return out, lse


CASES = []
for _recipe in RECIPES:
    for _which in "qkv":
        for _smooth in ([True, False] if _which == "k" else [True]):
            for _causal in [False, True]:
                CASES.append((_recipe, _which, _smooth, _causal))


def _id(c: tuple[str, str, bool, bool]) -> str:
    return f"{c[0]}-{c[1]}-{'smooth' if c[2] else 'nosmooth'}-{'causal' if c[3] else 'full'}"


@functools.cache
def _clean(recipe: str, smooth_k: bool, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return sageattn(*_inputs(), quant_recipe=RECIPES[recipe], smooth_k=smooth_k, is_causal=causal, return_lse=True)


@functools.cache
def _poisoned(recipe: str, which: str, smooth_k: bool, causal: bool, value: float) -> tuple[torch.Tensor, torch.Tensor]:
    t = dict(zip("qkv", _inputs()))
    t[which][PB, PH, PT, PC] = value
    return sageattn(t["q"], t["k"], t["v"], quant_recipe=RECIPES[recipe], smooth_k=smooth_k, is_causal=causal,
                    return_lse=True)


def _run(recipe: str, which: str, smooth_k: bool, causal: bool, value: float):
    """(clean out, clean lse, poisoned out, poisoned lse); cached, shared by the tests."""
    return (*_clean(recipe, smooth_k, causal), *_poisoned(recipe, which, smooth_k, causal, value))


_VALUES = [(float("nan"), "nan"), (float("inf"), "inf"), (-float("inf"), "-inf")]
UNAFFECTED = [pytest.param(c, v, id=f"{_id(c)}-{vid}") for c in CASES for v, vid in _VALUES
              if vid != "-inf" or c[0] == "per_thread"]  # -inf: default recipe only


@pytest.mark.parametrize("case, value", UNAFFECTED)
def test_unaffected_outputs_bitwise_equal(case: tuple[str, str, bool, bool], value: float) -> None:
    """Outside the poisoned group's reach, the result is exactly the clean result."""
    recipe, which, smooth_k, causal = case
    clean_out, clean_lse, out, lse = _run(recipe, which, smooth_k, causal, value)
    out_mask, lse_mask = _affected(which, recipe, causal, smooth_k)
    assert torch.equal(out[~out_mask], clean_out[~out_mask])
    assert torch.equal(lse[~lse_mask], clean_lse[~lse_mask])


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_affected_outputs_are_nan(case: tuple[str, str, bool, bool], value: float) -> None:
    """Inside its reach, every output (and LSE for q/k) is NaN: never a finite value."""
    recipe, which, smooth_k, causal = case
    _clean_out, _clean_lse, out, lse = _run(recipe, which, smooth_k, causal, value)
    out_mask, lse_mask = _affected(which, recipe, causal, smooth_k)
    assert bool(out[out_mask].isnan().all()), f"{int((~out[out_mask].isnan()).sum())} affected outputs not NaN"
    assert bool(lse[lse_mask].isnan().all()), f"{int((~lse[lse_mask].isnan()).sum())} affected LSE values not NaN"


@pytest.mark.parametrize("which", ["q", "k", "v"])
def test_nonfinite_never_finite_wrong(which: str) -> None:
    """Whatever the recipe: an output that differs from the clean run is NaN, never a
    different finite value."""
    for recipe in RECIPES:
        for smooth_k in (True, False):
            clean_out, clean_lse, out, lse = _run(recipe, which, smooth_k, True, float("nan"))
            differs = out.float() != clean_out.float()
            assert bool(out[differs].isnan().all()), recipe
            differs = lse != clean_lse
            assert bool(lse[differs].isnan().all()), recipe


def test_poisoned_first_key_tile_is_not_dropped() -> None:
    """Per-block K without smoothing, NaN in key 5: keys 0..127 share one scale, so the
    first 128-key tile scores NaN for every row; the rows must come out NaN."""
    q, k, v = _inputs(1)
    k = k.clone()
    k[0, 0, 5, 0] = float("nan")
    out = sageattn(q, k, v, quant_recipe=(128, 128, -1, 1), smooth_k=False)
    assert bool(out[0, :REP].isnan().all())


def test_fp8_output_poisoned_rows() -> None:
    """fp8_output: a row with a NaN output gets a NaN out_scale and NaN codes (0x7F/0xFF);
    other rows are bitwise the clean ones."""
    q, k, v = _inputs(2)
    clean = sageattn(q, k, v, fp8_output=True)
    v = v.clone()
    v[PB, PH, PT, PC] = float("nan")
    out, scale = sageattn(q, k, v, fp8_output=True)
    rows = torch.zeros(B, HQ, NQ, dtype=torch.bool)
    rows[PB, PH * REP:(PH + 1) * REP] = True
    # index the codes as bytes: torch 2.3-2.5 cannot index float8 tensors
    codes, clean_codes = out.view(torch.uint8), clean[0].view(torch.uint8)
    assert bool(scale[rows].isnan().all())
    assert bool(((codes[rows][:, PC] & 0x7F) == 0x7F).all())  # e4m3fn NaN: 0x7F / 0xFF
    assert torch.equal(codes[~rows], clean_codes[~rows])
    assert torch.equal(scale[~rows], clean[1][~rows])


def test_low_level_scales_are_poisoned() -> None:
    """The quantizer half of the contract: the poisoned group's scale is NaN (inf for an
    Inf input with nothing else non-finite), other scales are the clean ones."""
    from sageattention import ops

    q, k, v = _inputs(3)
    qn, kn, vn = (x.transpose(1, 2) for x in (q, k, v))
    clean = ops.quantize_qk(qn, kn, smooth_k=False)
    for value, check in [(float("nan"), math.isnan), (float("inf"), math.isinf)]:
        qp = qn.clone()
        qp[PB, PT, PH, PC] = value
        got = ops.quantize_qk(qp, kn, smooth_k=False)
        g = PT // 128
        assert check(float(got.q_scale[PB, PH, g]))
        mask = torch.ones_like(got.q_scale, dtype=torch.bool)
        mask[PB, PH, g] = False
        assert torch.equal(got.q_scale[mask], clean.q_scale[mask])
    vp = vn.clone()
    vp[PB, PT, PH, PC] = float("nan")
    vq = ops.quantize_v(vp)
    assert math.isnan(float(vq.v_scale[PB, PH, PC]))
    assert int((vq.v_scale.isnan()).sum()) == 1


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "+inf"])
def test_additive_mask_nonfinite(value: float) -> None:
    """A NaN or +inf additive mask entry makes its row NaN; -inf hides a key."""
    q, k, v = _inputs(4)
    mask = torch.zeros(NQ, NK)
    clean, _clean_lse = sageattn(q, k, v, attn_mask=mask, return_lse=True)
    mask[7, 9] = value
    out, lse = sageattn(q, k, v, attn_mask=mask, return_lse=True)
    assert bool(out[:, :, 7].isnan().all()) and bool(lse[:, :, 7].isnan().all())
    others = torch.ones(NQ, dtype=torch.bool)
    others[7] = False
    assert torch.equal(out[:, :, others], clean[:, :, others])


def test_additive_mask_all_nan_row() -> None:
    q, k, v = _inputs(5)
    mask = torch.zeros(NQ, NK)
    mask[11] = float("nan")
    out = sageattn(q, k, v, attn_mask=mask)
    assert bool(out[:, :, 11].isnan().all())


def test_additive_mask_neg_inf_row_is_masked() -> None:
    q, k, v = _inputs(6)
    mask = torch.zeros(NQ, NK)
    mask[11] = -float("inf")
    mask[12, :100] = -float("inf")
    out, lse = sageattn(q, k, v, attn_mask=mask, return_lse=True)
    assert bool((out[:, :, 11] == 0).all()) and bool((lse[:, :, 11] == -float("inf")).all())
    assert bool(torch.isfinite(out[:, :, 12]).all()) and bool(torch.isfinite(lse[:, :, 12]).all())
    keep = torch.ones(NQ, NK, dtype=torch.bool)
    keep[12, :100] = False
    keep[11] = False
    want = sageattn(q, k, v, attn_mask=keep)
    assert torch.equal(out, want)


@pytest.mark.parametrize("which", ["q", "k", "v"])
def test_varlen_nonfinite_stays_in_its_sequence(which: str) -> None:
    """Packed sequences are quantized separately: a NaN in one sequence never leaks into
    another."""
    from sageattention import sageattn_varlen

    g = torch.Generator().manual_seed(7)
    t = {n: torch.randn(300, 2, 32, generator=g).to(torch.bfloat16) for n in "qkv"}
    cu = torch.tensor([0, 100, 300], dtype=torch.int32)
    clean = sageattn_varlen(t["q"], t["k"], t["v"], cu, cu, 200, 200)
    t[which] = t[which].clone()
    t[which][150, 1, 4] = float("nan")
    out = sageattn_varlen(t["q"], t["k"], t["v"], cu, cu, 200, 200)
    assert torch.equal(out[:100], clean[:100])
    if which == "v":  # 16-bit P·V: only the channel of the head that reads the key
        assert bool(out[100:, 1, 4].isnan().all())
        assert torch.equal(out[100:, 0], clean[100:, 0]) and torch.equal(out[100:, 1, :4], clean[100:, 1, :4])
    elif which == "k":  # smoothed K: every row of the head that reads the poisoned kv head
        assert bool(out[100:, 1].isnan().all()) and torch.equal(out[100:, 0], clean[100:, 0])
    else:  # Q per 128-token block of the sequence: tokens 100..227 hold token 150
        assert bool(out[100:228, 1].isnan().all()) and torch.equal(out[228:, 1], clean[228:, 1])


@pytest.mark.parametrize("which", ["q", "k", "v"])
def test_half_pv_variants(which: str) -> None:
    """16-bit P·V (sageattn_qk_int8_pv_fp16_cuda / _triton): same rule for q and k; for v
    only the poisoned channel of the rows that see the key."""
    q, k, v = _inputs(9)
    for fn in (sageattention.sageattn_qk_int8_pv_fp16_cuda, sageattention.sageattn_qk_int8_pv_fp16_triton):
        clean = fn(q, k, v, return_lse=True)
        t = {"q": q.clone(), "k": k.clone(), "v": v.clone()}
        t[which][PB, PH, PT, PC] = float("nan")
        out, lse = fn(t["q"], t["k"], t["v"], return_lse=True)
        mask = torch.zeros(B, HQ, NQ, D, dtype=torch.bool)
        if which == "q":
            mask[PB, PH, 128:256] = True  # Q per 128-token block in both variants
        elif which == "k":
            mask[PB, PH * REP:(PH + 1) * REP] = True  # smoothing: the whole kv head
        else:
            mask[PB, PH * REP:(PH + 1) * REP, :, PC] = True  # every row sees key PT (not causal)
        assert bool(out[mask].isnan().all()), fn.__name__
        assert torch.equal(out[~mask], clean[0][~mask]), fn.__name__
        rows = mask.any(-1) if which != "v" else torch.zeros(B, HQ, NQ, dtype=torch.bool)
        assert bool(lse[rows].isnan().all()) and torch.equal(lse[~rows], clean[1][~rows]), fn.__name__


def test_nonfinite_no_crash_every_isa_path_smoke() -> None:
    """All-NaN / all-Inf tensors in every position: no crash, shapes intact."""
    q, k, v = _inputs(8)
    for which in "qkv":
        for value in (float("nan"), float("inf"), -float("inf")):
            t = {"q": q, "k": k, "v": v}
            t[which] = torch.full_like(t[which], value)
            for fp8_output in (False, True):
                res = sageattn(t["q"], t["k"], t["v"], fp8_output=fp8_output, return_lse=True, is_causal=True)
                assert res[0].shape == (B, HQ, NQ, D)
