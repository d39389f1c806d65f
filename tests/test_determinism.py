"""Determinism (hardening, issue 5 item 7): outputs are bitwise identical across repeated
calls and across thread counts (torch.set_num_threads(1) vs 2, and the core's own
num_threads from 1 to 8), for every recipe, both Q·Kᵀ dtypes, causal, GQA, masks, fp8
output, LSE, the 16-bit P·V variants and varlen.

Tasks are claimed dynamically by whichever thread is free, so this also pins that no
result depends on which thread computed it (each task owns its outputs; reductions run
in a fixed order)."""
from __future__ import annotations

import os
from typing import Any, Callable

import pytest
import torch

import sageattention
import sageattention as sa
from sageattention import _lib, sageattn

BF16 = torch.bfloat16


def _randn(shape: tuple[int, ...], seed: int, dtype: torch.dtype = BF16, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) + shift).to(dtype)


def _qkv(B: int = 1, Hq: int = 4, Hkv: int = 2, Nq: int = 300, Nk: int = 333, D: int = 64,
         dtype: torch.dtype = BF16) -> tuple[torch.Tensor, ...]:
    return (_randn((B, Hq, Nq, D), 1, dtype), _randn((B, Hkv, Nk, D), 2, dtype, shift=0.5),
            _randn((B, Hkv, Nk, D), 3, dtype))


def _calls() -> dict[str, Callable[[], Any]]:
    q, k, v = _qkv()
    mask = _randn((300, 333), 4, torch.float32) > 0
    mask[7] = False
    qt, kt, vt = _qkv(B=1, Hq=1, Hkv=1, Nq=1100, Nk=1100, D=128)  # whole-axis chunks and the column split of the K mean
    cu = (torch.tensor([0, 5, 200, 200, 300], dtype=torch.int32), torch.tensor([0, 5, 140, 140, 333]))
    packed = [x[0].transpose(0, 1) for x in (q, k, v)]  # (total, H, D) views
    calls: dict[str, Callable[[], Any]] = {}
    for recipe in [(128, 16, -1, 1), (128, 128, -1, 1), (128, 128, -1, 128), (-1, -1, -1, -1)]:
        for qk in ["int8", "fp8"]:
            calls[f"{recipe}-{qk}-causal"] = (lambda r=recipe, d=qk: sageattn(
                q, k, v, is_causal=True, quant_recipe=r, qk_quant_dtype=d, return_lse=True))
    calls["fp8_output"] = lambda: sageattn(q, k, v, fp8_output=True, return_lse=True)
    calls["mask_bool"] = lambda: sageattn(q, k, v, attn_mask=mask, return_lse=True)
    calls["nhd_fp16"] = lambda: sageattn(*(x.transpose(1, 2).half() for x in (q, k, v)), tensor_layout="NHD")
    calls["long_per_tensor"] = lambda: sageattn(qt, kt, vt, quant_recipe=(-1, -1, -1, -1), return_lse=True)
    calls["long_default"] = lambda: sageattn(qt, kt, vt, is_causal=True, return_lse=True)
    calls["pv_fp16_cuda"] = lambda: sa.sageattn_qk_int8_pv_fp16_cuda(q, k, v, is_causal=True, return_lse=True)
    calls["pv_fp8_smooth_v"] = lambda: sa.sageattn_qk_int8_pv_fp8_cuda(q, k, v, pv_accum_dtype="fp32+fp32",
                                                                        smooth_v=True)
    calls["per_warp"] = lambda: sa.sageattn_qk_int8_pv_fp8_cuda_sm90(q, k, v, qk_quant_gran="per_warp")
    calls["varlen"] = lambda: sageattn_varlen_call(packed, cu)
    return calls


def sageattn_varlen_call(packed: list[torch.Tensor], cu: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    q, k, v = packed
    return sa.sageattn_varlen(q, k, v, cu[0], cu[1], 195, 193, is_causal=True)


def _bits(res: Any) -> list[torch.Tensor]:
    parts = res if isinstance(res, tuple) else (res,)
    return [p.view(torch.uint8) if p.dtype == torch.float8_e4m3fn else p for p in parts]


def _same(a: Any, b: Any) -> bool:
    # bitwise (NaN-safe): compare raw bytes
    return all(x.shape == y.shape and torch.equal(x.contiguous().view(torch.uint8), y.contiguous().view(torch.uint8))
               for x, y in zip(_bits(a), _bits(b)))


CALLS = list(_calls())


@pytest.fixture(scope="module")
def calls() -> dict[str, Callable[[], Any]]:
    return _calls()


@pytest.fixture()
def threads():
    saved = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(saved)


@pytest.mark.parametrize("name", CALLS)
def test_repeated_calls_and_thread_counts_bitwise(calls: dict[str, Callable[[], Any]], threads: Any, name: str) -> None:
    threads(2)
    first = calls[name]()
    assert _same(first, calls[name]())
    threads(1)
    assert _same(first, calls[name]()), "1 thread differs from 2 threads"
    threads(2)
    assert _same(first, calls[name]())


def test_core_num_threads_1_to_8_bitwise() -> None:
    """The core's own num_threads argument, beyond the core count too (tasks are dealt
    dynamically): quantizers and attention give the same bits."""
    M = _lib.module()
    x = _randn((2, 700, 3, 96), 5)
    k = _randn((2, 650, 3, 96), 6, shift=1.0)
    outs: dict[int, list[torch.Tensor]] = {}
    for n in (1, 2, 3, 5, 8):
        codes, scale = torch.empty(x.shape, dtype=torch.int8), torch.empty(2, 3, 6)
        M.quantize_tokens(x, codes, scale, 128, 1, 128, False, False, None, n)
        mean = torch.empty(2, 3, 96)
        M.channel_mean(k, mean, n)
        kc, ks = torch.empty(k.shape, dtype=torch.int8), torch.empty(2, 3, 6 * 8)
        M.quantize_tokens(k, kc, ks, 128, 8, 8, False, False, mean, n)
        tc, ts = torch.empty(k.shape, dtype=torch.float8_e4m3fn), torch.empty(1, 1, 1)
        M.quantize_tokens(k, tc, ts, -1, 1, 0, True, True, None, n)
        vc, vs = torch.empty(k.shape, dtype=torch.float8_e4m3fn), torch.empty(2, 3, 96)
        M.quantize_channels(k, vc, vs, True, n)
        out, lse = torch.empty(2, 700, 3, 96, dtype=BF16), torch.empty(2, 3, 700)
        M.attention_forward(codes, kc, vc, scale, ks, vs, [128, 1, 128, 128, 8, 8, -1, 1, 0], 0, 0, False, mean,
                            None, 0.1, True, out, None, lse, n)
        outs[n] = [codes, scale, mean, kc, ks, tc.view(torch.uint8), ts, vc.view(torch.uint8), vs, out, lse]
    for n, got in outs.items():
        for i, (a, b) in enumerate(zip(got, outs[1])):
            assert torch.equal(a, b), f"num_threads={n}: tensor #{i} differs"


def test_isa_switch_round_trip_bitwise() -> None:
    """Forcing another SIMD path and back gives the first path's bits again (no state
    survives a switch)."""
    q, k, v = _qkv(Nq=130, Nk=140)
    start = _lib.cpu_isa()
    first = sageattn(q, k, v, return_lse=True)
    try:
        for isa in _lib.cpu_isa_names():
            if _lib.cpu_isa_available(isa):
                _lib.set_cpu_isa(isa)
                sageattn(q, k, v, return_lse=True)
    finally:
        _lib.set_cpu_isa(os.environ.get("SAGEATTN_CPU_ISA") or "auto")
    assert _lib.cpu_isa() == start
    assert _same(first, sageattn(q, k, v, return_lse=True))
