"""The public, upstream-compatible API (docs/CONTRACT.md §1-§4, §6).

Every entry point validates its input, resolves the recipe and layout, picks the backend
that owns the device, and runs quantize_qk -> quantize_v -> attention_quantized.
"""
from __future__ import annotations

import inspect
import numbers
from dataclasses import dataclass
from typing import Any, Literal, Optional, Sequence, Tuple, Union, overload

import torch

from ._backends import get_backend
from ._grad import guard_forward_only
from ._keywords import resolve_aliases
from ._masks import prepare_mask
from ._pv import PvMode, check_backend_runs, check_v_quant_dtype, resolve_pv_mode
from ._recipes import TRITON_BLOCKS, ResolvedRecipe, resolve, resolve_named
from ._validate import check_flag, check_qk_quant_dtype, check_qkv, known_true, resolve_sm_scale, to_nhd
from .varlen import sageattn_varlen

__all__ = [
    "sageattn",
    "sageattn_qk_int8_pv_fp16_cuda",
    "sageattn_qk_int8_pv_fp16_triton",
    "sageattn_qk_int8_pv_fp8_cuda",
    "sageattn_qk_int8_pv_fp8_cuda_sm90",
    "sageattn_varlen",
]

Result = Union[torch.Tensor, Tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class _Plan:
    """What one call computes, after the entry point has read its own arguments."""

    recipe: ResolvedRecipe
    qk_dtype: str = "int8"
    pv_mode: PvMode = PvMode.FP8  # HALF, or the 8-bit mode resolved by _run from pv_quant_dtype
    pv_quant_dtype: Optional[str] = None  # the 8-bit P·V keyword, checked; None: not given
    smooth_k: bool = True
    smooth_v: bool = False
    fp8_output: bool = False


def _run(q: Any, k: Any, v: Any, tensor_layout: Any, is_causal: bool, sm_scale: Optional[float],
         return_lse: bool, plan: _Plan, attn_mask: Any, kwargs: dict) -> Result:
    is_causal, sm_scale = resolve_aliases(is_causal, sm_scale, kwargs)
    check_qkv(q, k, v, tensor_layout)
    backend = get_backend(q.device)
    pv_mode = plan.pv_mode if plan.pv_mode is PvMode.HALF else resolve_pv_mode(plan.pv_quant_dtype, backend.name)
    check_backend_runs(pv_mode, backend)
    qn, kn, vn = (to_nhd(x, tensor_layout) for x in (q, k, v))
    b, nq, hq, d = qn.shape
    nk, hkv, dv = kn.shape[1], kn.shape[2], vn.shape[3]
    scale = resolve_sm_scale(sm_scale, d)
    mask = prepare_mask(attn_mask, bool(is_causal), b, hq, nq, nk, q.device)
    hnd = tensor_layout == "HND"

    # Decided only when known now: under torch.compile a length taken from data (.item(),
    # nonzero) is an unbacked symbol, and the kernels handle empty shapes themselves.
    if known_true(b * nq * hq * dv == 0):
        return _empty_result(b, nq, hq, dv, q, hnd, return_lse, plan.fp8_output)

    v_mean = None
    # softmax rows sum to 1, so the mean comes back as a plain add; with no key it is NaN,
    # but then every row is empty and the add below is masked off
    if plan.smooth_v and not known_true(nk == 0):
        v_mean = vn.float().mean(dim=1)  # (B, Hkv, Dv)
        vn = (vn.float() - v_mean[:, None]).to(vn.dtype)
    want_lse = bool(return_lse) or v_mean is not None  # smooth_v needs to know empty rows
    qq = backend.quantize_qk(qn, kn, quant_recipe=plan.recipe, qk_quant_dtype=plan.qk_dtype,
                             smooth_k=plan.smooth_k)
    if not pv_mode.quantizes_v:
        v_codes, v_scale = vn, None
    elif pv_mode is PvMode.INT8:
        v_codes, v_scale = backend.quantize_v(vn, quant_recipe=plan.recipe, dtype="int8")
    else:  # fp8 V: every backend's default, so one that runs nothing else need not take dtype
        v_codes, v_scale = backend.quantize_v(vn, quant_recipe=plan.recipe)
    result = backend.attention_quantized(
        qq.q_codes, qq.k_codes, v_codes, qq.q_scale, qq.k_scale, v_scale, scale, bool(is_causal),
        plan.recipe, want_lse, plan.fp8_output, k_mean=qq.k_mean, out_dtype=q.dtype,
        attn_mask=mask, out_hnd=hnd,
    )
    parts = list(result) if isinstance(result, tuple) else [result]
    if v_mean is not None:
        lse = parts.pop()
        # Rows that saw no key stay 0 (docs/CONTRACT.md §1.5): add the mean only where lse is finite.
        seen = torch.isfinite(lse)  # (B, Hq, Nq)
        add = v_mean.repeat_interleave(hq // hkv, dim=1)[:, :, None]  # (B, Hq, 1, Dv)
        add = torch.where(seen[..., None], add, torch.zeros((), dtype=add.dtype))
        add = add if hnd else add.transpose(1, 2)
        parts[0] = (parts[0].float() + add).to(q.dtype)
        if return_lse:
            parts.append(lse)
    parts[0] = guard_forward_only(parts[0], q, k, v)
    return tuple(parts) if len(parts) > 1 else parts[0]


def _empty_result(b: int, nq: int, hq: int, dv: int, q: torch.Tensor, hnd: bool, return_lse: bool,
                  fp8_output: bool) -> Result:
    shape = (b, hq, nq, dv) if hnd else (b, nq, hq, dv)
    out = q.new_empty(shape, dtype=torch.float8_e4m3fn if fp8_output else q.dtype)
    lse = torch.full((b, hq, nq), float("-inf"), dtype=torch.float32, device=q.device)
    if fp8_output:
        out_scale = q.new_empty(shape[:-1] + (1,), dtype=torch.float32)
        return (out, out_scale, lse) if return_lse else (out, out_scale)
    return (out, lse) if return_lse else out


def _check_choice(value: Any, allowed: Tuple[str, ...], name: str) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {allowed}, got {value!r}")


# ---- sageattn -----------------------------------------------------------------------------
# Positional order: upstream's seven, then MATE's five options in MATE's order
# (qk_quant_gran, qk_quant_dtype, quant_recipe, smooth_k, fp8_output; docs/CONTRACT.md §6).
# Upstream takes nothing positional after return_lse, so MATE's order breaks no upstream call.
@overload
def sageattn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tensor_layout: str = ...,
             is_causal: bool = ..., sm_scale: Optional[float] = ..., return_lse: Literal[False] = ...,
             qk_quant_gran: Optional[str] = ..., qk_quant_dtype: str = ...,
             quant_recipe: Optional[Sequence[int]] = ..., smooth_k: bool = ...,
             fp8_output: Literal[False] = ..., *, attn_mask: Optional[torch.Tensor] = ...,
             pv_quant_dtype: Optional[str] = ..., **kwargs: Any) -> torch.Tensor: ...
@overload
def sageattn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tensor_layout: str = ...,
             is_causal: bool = ..., sm_scale: Optional[float] = ..., *, return_lse: Literal[True],
             qk_quant_gran: Optional[str] = ..., qk_quant_dtype: str = ...,
             quant_recipe: Optional[Sequence[int]] = ..., smooth_k: bool = ...,
             fp8_output: Literal[False] = ..., attn_mask: Optional[torch.Tensor] = ...,
             pv_quant_dtype: Optional[str] = ..., **kwargs: Any) -> Tuple[torch.Tensor, torch.Tensor]: ...
@overload
def sageattn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tensor_layout: str = ...,
             is_causal: bool = ..., sm_scale: Optional[float] = ..., return_lse: Literal[False] = ...,
             qk_quant_gran: Optional[str] = ..., qk_quant_dtype: str = ...,
             quant_recipe: Optional[Sequence[int]] = ..., smooth_k: bool = ..., *,
             fp8_output: Literal[True], attn_mask: Optional[torch.Tensor] = ...,
             pv_quant_dtype: Optional[str] = ..., **kwargs: Any) -> Tuple[torch.Tensor, torch.Tensor]: ...
@overload
def sageattn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tensor_layout: str = ...,
             is_causal: bool = ..., sm_scale: Optional[float] = ..., *, return_lse: Literal[True],
             qk_quant_gran: Optional[str] = ..., qk_quant_dtype: str = ...,
             quant_recipe: Optional[Sequence[int]] = ..., smooth_k: bool = ...,
             fp8_output: Literal[True], attn_mask: Optional[torch.Tensor] = ...,
             pv_quant_dtype: Optional[str] = ..., **kwargs: Any) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...
@overload  # return_lse / fp8_output passed positionally (MATE's order): the form depends on them
def sageattn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tensor_layout: str = ...,
             is_causal: bool = ..., sm_scale: Optional[float] = ..., return_lse: bool = ...,
             qk_quant_gran: Optional[str] = ..., qk_quant_dtype: str = ...,
             quant_recipe: Optional[Sequence[int]] = ..., smooth_k: bool = ...,
             fp8_output: bool = ..., *, attn_mask: Optional[torch.Tensor] = ...,
             pv_quant_dtype: Optional[str] = ..., **kwargs: Any) -> Result: ...


def sageattn(q, k, v, tensor_layout="HND", is_causal=False, sm_scale=None, return_lse=False,
             qk_quant_gran="per_thread", qk_quant_dtype="int8", quant_recipe=None, smooth_k=True,
             fp8_output=False, *, attn_mask=None, pv_quant_dtype=None, **kwargs):
    """8-bit attention, SageAttention-compatible.

    q: (B, Hq, Nq, D) for "HND" or (B, Nq, Hq, D) for "NHD"; k, v: Hkv heads with
    Hq % Hkv == 0; float16/bfloat16; any strides. Q·Kᵀ in int8 or fp8 (`qk_quant_dtype`)
    with per-block scales and K smoothing, P·V in fp8 with per-channel V scales,
    fp32 online softmax. `quant_recipe` (q_block, k_block, dqk_block, dv_block)
    overrides `qk_quant_gran`. `attn_mask`: bool (True keeps) or additive float,
    broadcast to (B, Hq, Nq, Nk); not combinable with `is_causal`.
    `pv_quant_dtype`: "fp8" or "int8" (the CPU's opt-in int8 P·V mode); None (the
    default) reads SAGEATTN_CPU_PV on CPU and is fp8 otherwise (docs/DESIGN.md).

    Positional order: upstream's (up to return_lse), then MATE's wrapper's
    (qk_quant_gran, qk_quant_dtype, quant_recipe, smooth_k, fp8_output).

    Returns `out` (q's layout and dtype), `(out, lse)` with lse float32 (B, Hq, Nq),
    `(out_fp8, out_scale)` or `(out_fp8, out_scale, lse)` when `fp8_output=True`.
    flash-attn/SDPA spellings are honoured: `causal` (is_causal), `softmax_scale` and
    `scale` (sm_scale); see sageattention/_keywords.py. Other unknown keyword arguments
    are accepted and ignored, as upstream does.
    """
    plan = _Plan(resolve(quant_recipe, qk_quant_gran), check_qk_quant_dtype(qk_quant_dtype),
                 smooth_k=bool(smooth_k), fp8_output=check_flag(fp8_output, "fp8_output"),
                 pv_quant_dtype=_pv_keyword(pv_quant_dtype))
    return _run(q, k, v, tensor_layout, is_causal, sm_scale, return_lse, plan, attn_mask, kwargs)


def _pv_keyword(pv_quant_dtype: Any) -> Optional[str]:
    return None if pv_quant_dtype is None else check_v_quant_dtype(pv_quant_dtype, "pv_quant_dtype")


# ---- upstream-named variants ----------------------------------------------------------------
def _sm90(q, k, v, tensor_layout="HND", is_causal=False, qk_quant_gran="per_thread", sm_scale=None,
          pv_accum_dtype="fp32+fp32", smooth_k=True, return_lse=False, *, qk_quant_dtype="int8",
          fp8_output=False, quant_recipe=None, attn_mask=None, pv_quant_dtype=None, **kwargs) -> Result:
    _check_choice(pv_accum_dtype, ("fp32+fp32", "fp32"), "pv_accum_dtype")
    plan = _Plan(resolve_named(qk_quant_gran, quant_recipe), check_qk_quant_dtype(qk_quant_dtype),
                 smooth_k=bool(smooth_k), fp8_output=check_flag(fp8_output, "fp8_output"),
                 pv_quant_dtype=_pv_keyword(pv_quant_dtype))
    return _run(q, k, v, tensor_layout, is_causal, sm_scale, return_lse, plan, attn_mask, kwargs)


# The SM90 entry's positional order after qk_quant_gran differs: upstream puts sm_scale 7th,
# MATE's wrapper puts qk_quant_dtype there (and takes three more positionals at the end).
_SM90_HEAD = ("q", "k", "v", "tensor_layout", "is_causal", "qk_quant_gran")
_SM90_UPSTREAM_TAIL = ("sm_scale", "pv_accum_dtype", "smooth_k", "return_lse")
_SM90_MATE_TAIL = ("qk_quant_dtype", "sm_scale", "pv_accum_dtype", "smooth_k", "return_lse",
                   "fp8_output", "quant_recipe")


def _is_sm_scale(x: Any) -> bool:
    if x is None:
        return True
    if isinstance(x, torch.Tensor):
        return x.numel() == 1
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _sm90_arguments(args: Tuple[Any, ...], kwargs: dict) -> dict:
    """Name the positional arguments by the order their 7th one selects."""
    tail = _SM90_UPSTREAM_TAIL
    if len(args) > len(_SM90_HEAD):
        seventh = args[len(_SM90_HEAD)]
        if isinstance(seventh, str):
            tail = _SM90_MATE_TAIL
        elif not _is_sm_scale(seventh):
            raise TypeError(
                "sageattn_qk_int8_pv_fp8_cuda_sm90: the 7th positional argument is either MATE's "
                "qk_quant_dtype (a str: 'int8' or 'fp8') or upstream's sm_scale (a number or None), "
                f"got {type(seventh).__name__}"
            )
    names = _SM90_HEAD + tail
    if len(args) > len(names):
        order = "MATE's" if tail is _SM90_MATE_TAIL else "upstream's"
        raise TypeError(
            f"sageattn_qk_int8_pv_fp8_cuda_sm90: takes at most {len(names)} positional arguments in "
            f"{order} order ({', '.join(names)}), got {len(args)}"
        )
    named = dict(zip(names, args))
    for name in named:
        if name in kwargs:
            raise TypeError(f"sageattn_qk_int8_pv_fp8_cuda_sm90: got multiple values for argument '{name}'")
    named.update(kwargs)
    return named


def sageattn_qk_int8_pv_fp8_cuda_sm90(*args: Any, **kwargs: Any) -> Result:
    """Upstream's SM90 entry (int8 Q·Kᵀ, fp8 P·V) with its positional order, or MATE's.

    qk_quant_gran: "per_thread" (the default recipe) or "per_warp" (Q per 32 tokens, K per
    64 tokens). P·V always accumulates in fp32 on CPU; pv_accum_dtype takes upstream's
    values ("fp32+fp32", "fp32"). pv_quant_dtype (keyword) / SAGEATTN_CPU_PV as for
    `sageattn`.

    The 7th positional argument selects the order (docs/CONTRACT.md §6): a str is MATE's
    `qk_quant_dtype` and the rest follow MATE's wrapper (qk_quant_dtype, sm_scale,
    pv_accum_dtype, smooth_k, return_lse, fp8_output, quant_recipe); a number, a
    one-element tensor or None is upstream's `sm_scale` (sm_scale, pv_accum_dtype,
    smooth_k, return_lse). Anything else is a TypeError.
    """
    return _sm90(**_sm90_arguments(args, kwargs))


# Introspection shows upstream's signature (the keyword names are the same in both orders).
sageattn_qk_int8_pv_fp8_cuda_sm90.__signature__ = inspect.signature(_sm90)  # type: ignore[attr-defined]


def sageattn_qk_int8_pv_fp8_cuda(q, k, v, tensor_layout="HND", is_causal=False, qk_quant_gran="per_thread",
                                 sm_scale=None, pv_accum_dtype="fp32+fp16", smooth_k=True, smooth_v=False,
                                 return_lse=False, *, attn_mask=None, pv_quant_dtype=None, **kwargs) -> Result:
    """Upstream's SM89 entry: int8 Q·Kᵀ, fp8 P·V. pv_accum_dtype: "fp32", "fp32+fp32" or
    "fp32+fp16" (all accumulate in fp32 on CPU). smooth_v is honoured with "fp32+fp32",
    as upstream does, and ignored otherwise. pv_quant_dtype / SAGEATTN_CPU_PV as for
    `sageattn`."""
    _check_choice(pv_accum_dtype, ("fp32", "fp32+fp32", "fp32+fp16"), "pv_accum_dtype")
    plan = _Plan(resolve_named(qk_quant_gran), "int8", smooth_k=bool(smooth_k),
                 smooth_v=bool(smooth_v) and pv_accum_dtype == "fp32+fp32",
                 pv_quant_dtype=_pv_keyword(pv_quant_dtype))
    return _run(q, k, v, tensor_layout, is_causal, sm_scale, return_lse, plan, attn_mask, kwargs)


def sageattn_qk_int8_pv_fp16_cuda(q, k, v, tensor_layout="HND", is_causal=False, qk_quant_gran="per_thread",
                                  sm_scale=None, pv_accum_dtype="fp32", smooth_k=True, smooth_v=False,
                                  return_lse=False, *, attn_mask=None, **kwargs) -> Result:
    """Upstream's SM80 entry: int8 Q·Kᵀ, P and V kept in 16 bits, fp32 accumulation.
    pv_accum_dtype: "fp16", "fp16+fp32" or "fp32"; smooth_v is honoured with "fp16+fp32",
    as upstream does, and ignored otherwise."""
    _check_choice(pv_accum_dtype, ("fp16", "fp16+fp32", "fp32"), "pv_accum_dtype")
    plan = _Plan(resolve_named(qk_quant_gran), "int8", pv_mode=PvMode.HALF, smooth_k=bool(smooth_k),
                 smooth_v=bool(smooth_v) and pv_accum_dtype == "fp16+fp32")
    return _run(q, k, v, tensor_layout, is_causal, sm_scale, return_lse, plan, attn_mask, kwargs)


def sageattn_qk_int8_pv_fp16_triton(q, k, v, tensor_layout="HND", quantization_backend="triton",
                                    is_causal=False, attn_mask=None, sm_scale=None, smooth_k=True,
                                    return_lse=False, **kwargs) -> Result:
    """Upstream's Triton entry: int8 Q·Kᵀ with Q per 128-token and K per 64-token blocks,
    P and V in 16 bits. `quantization_backend` ("triton" or "cuda") only names where
    upstream quantizes; here the C++ core always does."""
    _check_choice(quantization_backend, ("triton", "cuda"), "quantization_backend")
    plan = _Plan(TRITON_BLOCKS, "int8", pv_mode=PvMode.HALF, smooth_k=bool(smooth_k))
    return _run(q, k, v, tensor_layout, is_causal, sm_scale, return_lse, plan, attn_mask, kwargs)
