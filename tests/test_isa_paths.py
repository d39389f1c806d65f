"""Attention ISA paths: every SIMD path of the CPU core agrees with the scalar path.

For each path of the core's ISA table (``_lib.cpu_isa_names()``) that this CPU can run
(others are skipped, saying what the CPU lacks), forced with ``sageattention._lib.set_cpu_isa``:

- the codes, scales and K means of ``ops.quantize_qk`` / ``ops.quantize_v`` are
  bitwise equal to the scalar path's;
- ``ops.attention_quantized`` on the same codes (fp32 output) agrees with the scalar
  path to fp32 reassociation: max |Δout| <= 1e-3 · max |out|, |ΔLSE| <= 1e-4, rows that
  see no key identical (output 0, LSE -inf);
- the public ``sageattn`` (bf16 output) agrees to a bf16 rounding step.

Shapes cover int8 and fp8 Q·K, both 8-bit P·V modes (fp8 and int8), causal, GQA,
Nq != Nk, tails of every tile size, head dims that are not multiples of 8 / 16, every
quantization recipe and a boolean mask with fully masked rows. The SIMD tile kernels are tested tile by tile in tests/cpp.
"""

from __future__ import annotations

import os
from typing import Dict, Tuple

import pytest
import torch

import sageattention.ops as ops
import sageattention._lib as _lib
import sageattention

def _use(name: str) -> None:
    _lib.set_cpu_isa(name)


# (B, Hq, Hkv, Nq, Nk, D, Dv, causal, qk dtype, recipe)
CASES = [
    (1, 2, 2, 130, 130, 64, 64, False, "int8", (128, 16, -1, 1)),
    (1, 2, 2, 130, 130, 64, 64, True, "fp8", (128, 16, -1, 1)),
    (2, 4, 2, 77, 200, 128, 128, False, "int8", (128, 128, -1, 1)),
    (1, 4, 1, 200, 200, 128, 128, True, "int8", (128, 128, -1, 128)),
    (1, 2, 1, 65, 257, 40, 40, False, "fp8", (-1, -1, -1, -1)),
    (1, 2, 2, 33, 33, 72, 72, True, "int8", (-1, -1, -1, -1)),
    (1, 1, 1, 5, 3, 3, 3, False, "int8", (128, 16, -1, 1)),
    (1, 2, 2, 64, 64, 256, 256, False, "fp8", (128, 128, -1, 128)),
]
CASE_IDS = [f"B{c[0]}H{c[1]}/{c[2]}N{c[3]}x{c[4]}D{c[5]}{'-causal' if c[7] else ''}-{c[8]}-{'_'.join(map(str, c[9]))}"
            for c in CASES]

_ref_cache: Dict[Tuple, Tuple] = {}


def _inputs(case, seed=0):
    B, Hq, Hkv, Nq, Nk, D, Dv = case[:7]
    g = torch.Generator().manual_seed(1000 + seed + Nq * 7 + D)
    q = torch.randn(B, Nq, Hq, D, generator=g).to(torch.bfloat16)
    k = (torch.randn(B, Nk, Hkv, D, generator=g) + 0.5).to(torch.bfloat16)
    v = torch.randn(B, Nk, Hkv, Dv, generator=g).to(torch.bfloat16)
    return q, k, v


def _run(case, q, k, v, pv_dtype="fp8"):
    """Quantized codes, fp32 attention on them (+LSE), and the public sageattn output, in
    the 8-bit P·V mode `pv_dtype`."""
    causal, dtype, recipe = case[7], case[8], case[9]
    qq = ops.quantize_qk(q, k, quant_recipe=recipe, qk_quant_dtype=dtype)
    qv = ops.quantize_v(v, quant_recipe=recipe, dtype=pv_dtype)
    out, lse = ops.attention_quantized(qq.q_codes, qq.k_codes, qv.v_codes, qq.q_scale, qq.k_scale, qv.v_scale, None,
                                       causal=causal, quant_recipe=recipe, return_lse=True, k_mean=qq.k_mean,
                                       out_dtype=torch.float32)
    pub = sageattention.sageattn(q, k, v, tensor_layout="NHD", is_causal=causal, quant_recipe=recipe,
                                 qk_quant_dtype=dtype, pv_quant_dtype=pv_dtype)
    return qq, qv, out, lse, pub


def _reference(case, idx, pv_dtype="fp8"):
    if (idx, pv_dtype) not in _ref_cache:
        q, k, v = _inputs(case)
        _use("scalar")
        try:
            _ref_cache[(idx, pv_dtype)] = _run(case, q, k, v, pv_dtype)
        finally:
            _lib.set_cpu_isa("auto")
    return _ref_cache[(idx, pv_dtype)]


def _bitwise(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype.is_floating_point and a.element_size() == 4:
        return torch.equal(a.view(torch.int32), b.view(torch.int32))
    if a.dtype == torch.float8_e4m3fn:
        return torch.equal(a.view(torch.uint8), b.view(torch.uint8))
    return torch.equal(a, b)


def _assert_close_out(out: torch.Tensor, want: torch.Tensor, rel: float, what: str) -> None:
    scale = want.abs().max().item()
    diff = (out.float() - want.float()).abs().max().item()
    assert diff <= rel * max(scale, 1e-30), f"{what}: max |diff| {diff:.3e} vs max |out| {scale:.3e}"


def _assert_close_lse(lse: torch.Tensor, want: torch.Tensor) -> None:
    inf = torch.isinf(want)
    assert torch.equal(torch.isinf(lse), inf), "LSE: -inf rows differ"
    assert torch.equal(lse[inf], want[inf])
    d = (lse[~inf] - want[~inf]).abs()
    tol = 1e-4 + 1e-6 * want[~inf].abs()
    assert bool((d <= tol).all()), f"LSE: max |diff| {d.max().item():.3e}"


@pytest.mark.parametrize("pv_dtype", ["fp8", "int8"], ids=["pv_fp8", "pv_int8"])
@pytest.mark.parametrize("idx", range(len(CASES)), ids=CASE_IDS)
def test_isa_path_matches_scalar(isa: str, idx: int, pv_dtype: str) -> None:
    case = CASES[idx]
    ref_qq, ref_qv, ref_out, ref_lse, ref_pub = _reference(case, idx, pv_dtype)
    q, k, v = _inputs(case)
    _use(isa)
    assert _lib.cpu_isa() == isa
    qq, qv, out, lse, pub = _run(case, q, k, v, pv_dtype)
    # Quantized codes: bitwise equal across paths.
    for name in ("q_codes", "q_scale", "k_codes", "k_scale", "k_mean"):
        assert _bitwise(getattr(qq, name), getattr(ref_qq, name)), f"quantize_qk {name} differs on {isa}"
    for name in ("v_codes", "v_scale"):
        assert _bitwise(getattr(qv, name), getattr(ref_qv, name)), f"quantize_v {name} differs on {isa}"
    # Attention on the same codes.
    _assert_close_out(out, ref_out, 1e-3, f"attention_quantized out ({isa})")
    _assert_close_lse(lse, ref_lse)
    # Public API, bf16 output: one bf16 rounding step (2^-8 relative) at most.
    _assert_close_out(pub, ref_pub, 2.0 ** -7, f"sageattn out ({isa})")


@pytest.mark.parametrize("pv_dtype", ["fp8", "int8"], ids=["pv_fp8", "pv_int8"])
def test_fully_masked_rows(isa: str, pv_dtype: str) -> None:
    """Rows whose mask hides every key: output exactly 0 and LSE -inf on every path."""
    case = (1, 2, 2, 70, 90, 64, 64, False, "int8", (128, 16, -1, 1))
    q, k, v = _inputs(case, seed=5)
    mask = torch.rand(1, 2, 70, 90, generator=torch.Generator().manual_seed(3)) > 0.3
    mask[:, :, ::7, :] = False  # fully masked rows
    mask[:, 1, 5, :64] = False  # a row that only sees the second key tile
    qq = ops.quantize_qk(q, k)
    qv = ops.quantize_v(v, dtype=pv_dtype)

    def attend():
        return ops.attention_quantized(qq.q_codes, qq.k_codes, qv.v_codes, qq.q_scale, qq.k_scale, qv.v_scale, None,
                                       return_lse=True, k_mean=qq.k_mean, out_dtype=torch.float32, attn_mask=mask)

    _use("scalar")
    want_out, want_lse = attend()
    _use(isa)
    out, lse = attend()
    dead = ~mask.any(dim=-1)  # (B, H, Nq)
    assert bool(dead.any())
    assert bool((out.permute(0, 2, 1, 3)[dead] == 0).all())
    assert bool(torch.isneginf(lse[dead]).all())
    _assert_close_out(out, want_out, 1e-3, f"masked attention ({isa})")
    _assert_close_lse(lse, want_lse)


def test_isa_table_names_and_override() -> None:
    """The core's one ISA table: listed most capable first, scalar always there and last,
    every available name can be forced, unknown or unavailable names raise ValueError."""
    names = _lib.cpu_isa_names()
    assert names and names[-1] == "scalar" and len(set(names)) == len(names)
    assert _lib.cpu_isa_available("scalar")
    assert not _lib.cpu_isa_available("sse9")
    try:
        for name in names:
            if _lib.cpu_isa_available(name):
                _lib.set_cpu_isa(name)
                assert _lib.cpu_isa() == name
            else:
                with pytest.raises(ValueError, match="not available"):
                    _lib.set_cpu_isa(name)
        with pytest.raises(ValueError, match="unknown ISA 'sse9'.*scalar"):
            _lib.set_cpu_isa("sse9")
        _lib.set_cpu_isa("auto")
        assert _lib.cpu_isa() == next(n for n in names if _lib.cpu_isa_available(n))
    finally:
        _lib.set_cpu_isa(os.environ.get("SAGEATTN_CPU_ISA") or "auto")


def test_pv_mode_of_v_dtype() -> None:
    from sageattention._pv import PvMode, pv_mode_of_v

    assert pv_mode_of_v(torch.empty(1, dtype=torch.float8_e4m3fn)) is PvMode.FP8
    assert pv_mode_of_v(torch.empty(1, dtype=torch.bfloat16)) is PvMode.HALF
    assert pv_mode_of_v(torch.empty(1, dtype=torch.float16)) is PvMode.HALF
    assert pv_mode_of_v(torch.empty(1, dtype=torch.int8)) is PvMode.INT8
    assert [m.ffi_code for m in PvMode] == [0, 1, 2]  # sageattn::PvMode
    with pytest.raises(TypeError, match=r"\bv\b.*float32"):
        pv_mode_of_v(torch.empty(1, dtype=torch.float32))
