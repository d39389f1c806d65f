"""The C++ core as torch custom ops (registered for the CPU dispatch key through
_op_registry), so torch.compile(fullgraph=True) traces through sageattention without a
graph break. Each op allocates its outputs and calls the core; its fake implementation
only states shapes and dtypes.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from .. import _lib
from .._op_registry import define_op


def _threads() -> int:
    return max(1, torch.get_num_threads())


def _scale_shape(b: int, h: int, n: int, block: int, groups: int, per_tensor: bool) -> Tuple[int, int, int]:
    if per_tensor:
        return (1, 1, 1)
    ng = groups if block <= 0 else -(-n // block) * groups
    return (b, h, ng)


def _code_dtype(fp8: bool) -> torch.dtype:
    return torch.float8_e4m3fn if fp8 else torch.int8


# ---- quantize along tokens -------------------------------------------------------------
def _quantize_tokens(x: torch.Tensor, block: int, groups: int, stride: int, per_tensor: bool, fp8: bool,
                    mean: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    b, n, h, _ = x.shape
    codes = torch.empty(x.shape, dtype=_code_dtype(fp8))
    scale = torch.empty(_scale_shape(b, h, n, block, groups, per_tensor), dtype=torch.float32)
    _lib.module().quantize_tokens(x, codes, scale, block, groups, stride, per_tensor, fp8, mean, _threads())
    return codes, scale


def _quantize_tokens_fake(x, block, groups, stride, per_tensor, fp8, mean):
    b, n, h, _ = x.shape
    return (x.new_empty(x.shape, dtype=_code_dtype(fp8)),
            x.new_empty(_scale_shape(b, h, n, block, groups, per_tensor), dtype=torch.float32))


# ---- K mean ----------------------------------------------------------------------------
def _channel_mean(x: torch.Tensor) -> torch.Tensor:
    mean = torch.empty((x.shape[0], x.shape[2], x.shape[3]), dtype=torch.float32)
    _lib.module().channel_mean(x, mean, _threads())
    return mean


def _channel_mean_fake(x):
    return x.new_empty((x.shape[0], x.shape[2], x.shape[3]), dtype=torch.float32)


# ---- V per channel ---------------------------------------------------------------------
def _quantize_channels(x: torch.Tensor, fp8: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    codes = torch.empty(x.shape, dtype=_code_dtype(fp8))
    scale = torch.empty((x.shape[0], x.shape[2], x.shape[3]), dtype=torch.float32)
    _lib.module().quantize_channels(x, codes, scale, fp8, _threads())
    return codes, scale


def _quantize_channels_fake(x, fp8):
    return (x.new_empty(x.shape, dtype=_code_dtype(fp8)),
            x.new_empty((x.shape[0], x.shape[2], x.shape[3]), dtype=torch.float32))


# ---- attention -------------------------------------------------------------------------
def _attention_outputs(q: torch.Tensor, v: torch.Tensor, out_hnd: bool, out_dtype: torch.dtype,
                       fp8_output: bool, return_lse: bool, factory) -> Tuple[torch.Tensor, ...]:
    b, nq, hq, _ = q.shape
    dv = v.shape[3]
    odt = torch.float8_e4m3fn if fp8_output else out_dtype
    shape = (b, hq, nq, dv) if out_hnd else (b, nq, hq, dv)
    sshape = (b, hq, nq, 1) if out_hnd else (b, nq, hq, 1)
    out = factory(shape, odt)
    out_scale = factory(sshape if fp8_output else (0,), torch.float32)
    lse = factory((b, hq, nq) if return_lse else (0,), torch.float32)
    return out, out_scale, lse


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_scale: torch.Tensor,
              k_scale: torch.Tensor, v_scale: Optional[torch.Tensor], groupings: List[int], pv_mode: int,
              v_scale_mode: int, k_mean: Optional[torch.Tensor], mask: Optional[torch.Tensor], sm_scale: float, causal: bool,
              out_hnd: bool, out_dtype: torch.dtype, fp8_output: bool,
              return_lse: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """pv_mode / v_scale_mode: the FFI codes of sageattention._pv.PvMode / VScaleMode.
    Outputs: out in HND or NHD, out_scale (same layout, last dim 1; empty unless fp8
    output), lse (B, Hq, Nq) (empty unless requested)."""
    out, out_scale, lse = _attention_outputs(q, v, out_hnd, out_dtype, fp8_output, return_lse,
                                             lambda s, d: torch.empty(s, dtype=d))
    as_nhd = (lambda t: t.transpose(1, 2)) if out_hnd else (lambda t: t)
    _lib.module().attention_forward(
        q, k, v, q_scale, k_scale, v_scale, groupings, pv_mode, v_scale_mode, q.dtype == torch.float8_e4m3fn, k_mean,
        mask,
        float(sm_scale), bool(causal), as_nhd(out), as_nhd(out_scale) if fp8_output else None,
        lse if return_lse else None, _threads(),
    )
    return out, out_scale, lse


def _attention_fake(q, k, v, q_scale, k_scale, v_scale, groupings, pv_mode, v_scale_mode, k_mean, mask, sm_scale, causal, out_hnd,
      out_dtype, fp8_output, return_lse):
    return _attention_outputs(q, v, out_hnd, out_dtype, fp8_output, return_lse,
                              lambda s, d: q.new_empty(s, dtype=d))


quantize_tokens = define_op(
    "quantize_tokens(Tensor x, int block, int groups, int stride, bool per_tensor, bool fp8, Tensor? mean)"
    " -> (Tensor, Tensor)", _quantize_tokens_fake, {"CPU": _quantize_tokens})
channel_mean = define_op("channel_mean(Tensor x) -> Tensor", _channel_mean_fake, {"CPU": _channel_mean})
quantize_channels = define_op("quantize_channels(Tensor x, bool fp8) -> (Tensor, Tensor)", _quantize_channels_fake,
                              {"CPU": _quantize_channels})
attention = define_op(
    "attention(Tensor q, Tensor k, Tensor v, Tensor q_scale, Tensor k_scale, Tensor? v_scale, int[] groupings,"
    " int pv_mode, int v_scale_mode, Tensor? k_mean, Tensor? mask, float sm_scale, bool causal, bool out_hnd,"
    " ScalarType out_dtype, bool fp8_output, bool return_lse) -> (Tensor, Tensor, Tensor)",
    _attention_fake, {"CPU": _attention})
