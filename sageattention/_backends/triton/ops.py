"""The Triton kernels as torch custom ops, `sageattention::triton_*`, registered for the
CUDA dispatch key (ROCm too) and for the CPU key, where they run in Triton's interpreter
when SAGEATTN_BACKEND=triton forces this backend. Each op allocates its outputs on the
input's device and launches kernels asynchronously: no host synchronisation, no branch
on tensor data, so a call can be captured in a CUDA graph. Fake kernels state shapes for
torch.compile.

fp8 tensors cross into the kernels as uint8 views (same bits): codes are written as
bits, never through Triton's fp8 cast (numerics.py).
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import numpy as np
import torch
import triton

from ..._op_registry import define_op
from ..._pv import PvMode, VScaleMode
from . import capability
from .attention_kernel import attention_kernel
from .numerics import LOG2E
from .quantize_kernels import (channel_mean_kernel, encode_tensor_kernel, quantize_blocks_kernel,
                               quantize_channels_kernel, tensor_amax_partials_kernel, tensor_scale_kernel)

_TILE_T = 128  # tokens per quantizer program (every token block is <= 128)
_FP8 = torch.float8_e4m3fn


def interpreting() -> bool:
    """True when the kernels were built by Triton's interpreter (TRITON_INTERPRET=1 was
    set before this module was first imported)."""
    return type(attention_kernel).__name__ == "InterpretedFunction"


def _check_runnable(x: torch.Tensor, name: str = "x", dtypes: Tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16)
                    ) -> None:
    if x.dtype not in dtypes:
        raise TypeError(f"{name}: dtype {x.dtype} is not supported here; expected one of {dtypes}")
    if x.device.type == "cpu" and not interpreting():
        raise ValueError("device: the Triton backend runs on CPU tensors only in Triton's interpreter; "
                         "set TRITON_INTERPRET=1 before sageattention's first Triton call")


def _pow2(n: int, floor: int = 16) -> int:
    return max(floor, triton.next_power_of_2(max(int(n), 1)))


def _bits(t: torch.Tensor) -> torch.Tensor:
    """fp8 as uint8 and fp16/bf16 as int16 views: the kernels store bits, never casts."""
    if t.dtype == _FP8:
        return t.view(torch.uint8)
    return t.view(torch.int16) if t.dtype in _HALF_KIND else t


_HALF_KIND = {torch.float16: 1, torch.bfloat16: 2}
_RUNS_PV = (PvMode.FP8.ffi_code, PvMode.HALF.ffi_code)


def _scale_shape(b: int, h: int, n: int, block: int, groups: int, per_tensor: bool) -> Tuple[int, int, int]:
    if per_tensor:
        return (1, 1, 1)
    return (b, h, groups if block <= 0 else -(-n // block) * groups)


# ---- quantize along tokens -----------------------------------------------------------------
def _quantize_tokens(x: torch.Tensor, block: int, groups: int, stride: int, per_tensor: bool, fp8: bool,
                     mean: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    _check_runnable(x)
    b, n, h, d = x.shape
    codes = torch.empty(x.shape, dtype=_FP8 if fp8 else torch.int8, device=x.device)
    scale = torch.empty(_scale_shape(b, h, n, block, groups, per_tensor), dtype=torch.float32, device=x.device)
    if not per_tensor and scale.numel() == 0:
        return codes, scale
    qmax = 448.0 if fp8 else 127.0
    kind, x = _HALF_KIND[x.dtype], _bits(x)
    tile_d = min(_pow2(d), 128)
    cb = _bits(codes)
    has_mean = mean is not None
    m = mean if has_mean else x
    ms = mean.stride() if has_mean else (0, 0, 0)
    if per_tensor:
        tiles = triton.cdiv(n, _TILE_T)
        partial = torch.zeros((max(b * h * tiles, 1),), dtype=torch.float32, device=x.device)
        if b * h * tiles:
            tensor_amax_partials_kernel[(b * h, tiles)](x, m, partial, h, n, d, *x.stride(), *ms,
                                                        HAS_MEAN=has_mean, HALF_KIND=kind, TILE_T=_TILE_T,
                                                        TILE_D=tile_d)
        tensor_scale_kernel[(1,)](partial, scale, partial.numel(), qmax, TILE=1024)
        if b * h * tiles:
            encode_tensor_kernel[(b * h, tiles)](x, m, cb, scale, h, n, d, *x.stride(), *ms, *cb.stride(),
                                                 HAS_MEAN=has_mean, HALF_KIND=kind, FP8=fp8, TILE_T=_TILE_T,
                                                 TILE_D=tile_d)
        return codes, scale
    if block <= 0 or block > _TILE_T or groups < 1 or stride < 1:
        raise ValueError(f"grouping: the Triton quantizer takes token blocks of 1..{_TILE_T} with "
                         f"groups >= 1 and stride >= 1, got ({block}, {groups}, {stride})")
    quantize_blocks_kernel[(b * h, triton.cdiv(n, block))](
        x, m, cb, scale, h, n, d, *x.stride(), *ms, *cb.stride(), *scale.stride(), block, stride, qmax,
        GROUPS=groups, HAS_MEAN=has_mean, HALF_KIND=kind, FP8=fp8, TILE_T=_pow2(block), TILE_D=tile_d)
    return codes, scale


def _quantize_tokens_fake(x, block, groups, stride, per_tensor, fp8, mean):
    b, n, h, _ = x.shape
    return (x.new_empty(x.shape, dtype=_FP8 if fp8 else torch.int8),
            x.new_empty(_scale_shape(b, h, n, block, groups, per_tensor), dtype=torch.float32))


# ---- K mean, V per channel -----------------------------------------------------------------
def _channel_mean(x: torch.Tensor) -> torch.Tensor:
    _check_runnable(x)
    b, n, h, d = x.shape
    mean = torch.empty((b, h, d), dtype=torch.float32, device=x.device)
    if mean.numel():
        tile_d = min(_pow2(d), 64)
        channel_mean_kernel[(b * h, triton.cdiv(d, tile_d))](_bits(x), mean, h, n, d, *x.stride(), *mean.stride(),
                                                             HALF_KIND=_HALF_KIND[x.dtype], TILE_T=64,
                                                             TILE_D=tile_d)
    return mean


def _channel_mean_fake(x):
    return x.new_empty((x.shape[0], x.shape[2], x.shape[3]), dtype=torch.float32)


def _quantize_channels(x: torch.Tensor, fp8: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    _check_runnable(x)
    if not fp8:
        raise NotImplementedError("fp8: the Triton backend quantizes V per channel to fp8 only (no int8 P·V mode)")
    b, n, h, d = x.shape
    codes = torch.empty(x.shape, dtype=_FP8, device=x.device)
    scale = torch.empty((b, h, d), dtype=torch.float32, device=x.device)
    if scale.numel():
        cb = _bits(codes)
        tile_d = min(_pow2(d), 64)
        quantize_channels_kernel[(b * h, triton.cdiv(d, tile_d))](
            _bits(x), cb, scale, h, n, d, *x.stride(), *cb.stride(), *scale.stride(),
            HALF_KIND=_HALF_KIND[x.dtype], TILE_T=64, TILE_D=tile_d)
    return codes, scale


def _quantize_channels_fake(x, fp8):
    return (x.new_empty(x.shape, dtype=_FP8),
            x.new_empty((x.shape[0], x.shape[2], x.shape[3]), dtype=torch.float32))


# ---- attention -----------------------------------------------------------------------------
def _attention_outputs(q: torch.Tensor, v: torch.Tensor, out_hnd: bool, out_dtype: torch.dtype,
                       fp8_output: bool, return_lse: bool, factory) -> Tuple[torch.Tensor, ...]:
    b, nq, hq, _ = q.shape
    dv = v.shape[3]
    shape = (b, hq, nq, dv) if out_hnd else (b, nq, hq, dv)
    sshape = (b, hq, nq, 1) if out_hnd else (b, nq, hq, 1)
    out = factory(shape, _FP8 if fp8_output else out_dtype)
    out_scale = factory(sshape if fp8_output else (0,), torch.float32)
    lse = factory((b, hq, nq) if return_lse else (0,), torch.float32)
    return out, out_scale, lse


def _scale_strides(s: torch.Tensor) -> Tuple[int, int, int]:
    # Size-1 dims broadcast (a per-tensor scale is (1, 1, 1)).
    return tuple(0 if s.shape[i] == 1 else s.stride(i) for i in range(3))  # type: ignore[return-value]


def _split_score_scale(sm_scale: float) -> Tuple[float, float]:
    """The score scale sm_scale·log2(e) as (Q's side, K's side), K's a power of two, split
    as the C++ core splits it (csrc/core/attention.cc, split_score_scale): an ordinary
    sm_scale (below 2^32) is not split, and Q's side is the same float32 product the
    kernel formed before, so those scores are bitwise unchanged."""
    s = float(np.float32(sm_scale))
    _, exponent = math.frexp(s)
    k_shift = exponent // 2 if exponent > 32 else 0
    return float(np.float32(math.ldexp(s, -k_shift)) * np.float32(LOG2E)), math.ldexp(1.0, k_shift)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_scale: torch.Tensor,
               k_scale: torch.Tensor, v_scale: Optional[torch.Tensor], groupings: List[int], pv_mode: int,
               v_scale_mode: int, k_mean: Optional[torch.Tensor], mask: Optional[torch.Tensor], sm_scale: float, causal: bool,
               out_hnd: bool, out_dtype: torch.dtype, fp8_output: bool,
               return_lse: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Same contract as the C++ core's `sageattention::attention` (cpu_ops.py), less the
    int8 P·V mode."""
    _check_runnable(q, "q", (torch.int8, _FP8))
    if k.dtype != q.dtype:
        raise TypeError(f"k: codes must have q's dtype {q.dtype}, got {k.dtype}")
    half_v = pv_mode == PvMode.HALF.ffi_code
    if pv_mode not in _RUNS_PV or half_v != (v.dtype in _HALF_KIND) or v.dtype not in (_FP8, *_HALF_KIND):
        raise TypeError(f"v: dtype {v.dtype} does not fit pv_mode {pv_mode} (the Triton kernels run "
                        "fp8 codes or float16/bfloat16 V)")
    if v_scale_mode not in (VScaleMode.PER_CHANNEL, VScaleMode.PER_TOKEN):
        raise ValueError(f"v_scale_mode: expected 0 (per channel) or 1 (per token), got {v_scale_mode}")
    v_per_channel = not half_v and v_scale_mode == VScaleMode.PER_CHANNEL
    out, out_scale, lse = _attention_outputs(q, v, out_hnd, out_dtype, fp8_output, return_lse,
                                             lambda s, dt: torch.empty(s, dtype=dt, device=q.device))
    b, nq, hq, d = q.shape
    nk, hkv, dv = k.shape[1], k.shape[2], v.shape[3]
    if out.numel() == 0:
        return out, out_scale, lse
    o = out.transpose(1, 2) if out_hnd else out
    o_s = (out_scale.transpose(1, 2) if out_hnd else out_scale) if fp8_output else out_scale
    qb, qg, qs, kb, kg, ks, vb, _vg, _vs = groupings
    qb, kb, vb = (x if x > 0 else max(n, 1) for x, n in ((qb, nq), (kb, nk), (vb, nk)))
    qs, ks = (s if s > 0 else -(-blk // g) for s, blk, g in ((qs, qb, qg), (ks, kb, kg)))
    fp8_dot = capability.fp8_dot(q.device)
    pv_kernel = capability.PV_HALF_V if half_v else (
        capability.PV_FP8_DOT if fp8_dot else capability.PV_FP8_AS_FP16)
    d_pad, dv_pad = _pow2(d, 32), _pow2(dv)  # 8-bit MMAs take k >= 32
    block_m, block_n, warps, stages = capability.tiles(q.device, d_pad, dv_pad)
    if not half_v and not v_per_channel and groupings[6] > 0 and vb % block_n:
        raise ValueError(f"v_scale: the Triton kernel needs V token blocks that are multiples of {block_n}, "
                         f"got {vb}")
    vs = v_scale if v_scale is not None else q_scale
    mask_kind = 0 if mask is None else (1 if mask.dtype == torch.bool else 2)
    mk = q if mask is None else (mask.view(torch.uint8) if mask_kind == 1 else mask)
    mstr = (0, 0, 0, 0) if mask is None else tuple(0 if mask.shape[i] == 1 else mask.stride(i) for i in range(4))
    km = k_mean if k_mean is not None else q_scale
    kms = _scale_strides(k_mean) if k_mean is not None else (0, 0, 0)
    vss = tuple(v_scale.stride()) if (v_scale is not None and v_per_channel) else (
        _scale_strides(v_scale) if v_scale is not None else (0, 0, 0))
    ob = _bits(o)
    os_strides = (o_s.stride(0), o_s.stride(1), o_s.stride(2)) if fp8_output else (0, 0, 0)
    lse_strides = lse.stride() if return_lse else (0, 0, 0)
    attention_kernel[(triton.cdiv(nq, block_m), b * hq)](
        _bits(q), _bits(k), _bits(v), q_scale, k_scale, vs, km, mk, ob, o_s, lse,
        *q.stride(), *k.stride(), *v.stride(),
        *_scale_strides(q_scale), *_scale_strides(k_scale), *vss, *kms, *mstr,
        *ob.stride(), *os_strides, *lse_strides,
        hq, nq, nk, d, dv, hq // hkv, qb, qg, qs, kb, kg, ks, vb, float(sm_scale), *_split_score_scale(sm_scale),
        QK_FP8=q.dtype == _FP8, QK_DOT_FP8=fp8_dot, HALF_DOT=capability.half_dot(q.device),
        V_KIND=_HALF_KIND.get(v.dtype, 0), PV_MODE=pv_kernel, V_PER_CHANNEL=v_per_channel,
        CAUSAL=bool(causal), MASK_KIND=mask_kind, HAS_KMEAN=k_mean is not None, RETURN_LSE=bool(return_lse),
        FP8_OUT=bool(fp8_output), OUT_KIND=_HALF_KIND.get(o.dtype, 0), BLOCK_M=block_m, BLOCK_N=block_n, D_PAD=d_pad, DV_PAD=dv_pad,
        num_warps=warps, num_stages=stages,
    )
    return out, out_scale, lse


def _attention_fake(q, k, v, q_scale, k_scale, v_scale, groupings, pv_mode, v_scale_mode, k_mean, mask, sm_scale,
                    causal, out_hnd, out_dtype, fp8_output, return_lse):
    return _attention_outputs(q, v, out_hnd, out_dtype, fp8_output, return_lse,
                              lambda s, dt: q.new_empty(s, dtype=dt))


def _on_devices(kernel):
    return {"CUDA": kernel, "CPU": kernel}


quantize_tokens = define_op(
    "triton_quantize_tokens(Tensor x, int block, int groups, int stride, bool per_tensor, bool fp8, Tensor? mean)"
    " -> (Tensor, Tensor)", _quantize_tokens_fake, _on_devices(_quantize_tokens))
channel_mean = define_op("triton_channel_mean(Tensor x) -> Tensor", _channel_mean_fake, _on_devices(_channel_mean))
quantize_channels = define_op("triton_quantize_channels(Tensor x, bool fp8) -> (Tensor, Tensor)",
                              _quantize_channels_fake, _on_devices(_quantize_channels))
attention = define_op(
    "triton_attention(Tensor q, Tensor k, Tensor v, Tensor q_scale, Tensor k_scale, Tensor? v_scale,"
    " int[] groupings, int pv_mode, int v_scale_mode, Tensor? k_mean, Tensor? mask, float sm_scale, bool causal,"
    " bool out_hnd, ScalarType out_dtype, bool fp8_output, bool return_lse) -> (Tensor, Tensor, Tensor)",
    _attention_fake, _on_devices(_attention))
