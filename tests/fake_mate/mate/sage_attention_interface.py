"""Fake of `mate.sage_attention_interface.sage_attn_quantized`, written from MATE's
published source (v0.2.2): the Python entry point `mate/sage_attention_interface.py` and
its binding `sage_attn_quantized_asm` in `csrc/sage_attention_asm.mu`.

It raises on anything the real kernel relies on and would read wrongly or reject:
the exact signature (names, order, defaults: a misspelt keyword is a TypeError), backend
"mubin", the four dense recipes (quant modes 0/2/6/7), softmax_scale a Python float,
q/k/v 4-D (B, N, H, D) with unit last stride, Hq % Hkv == 0, head dims in 1..128, the
dtype pairs the binding accepts (int8 Q·K with fp8 V, or Q, K, V all one fp8 dtype), and
every scale a contiguous float32 tensor of the exact 4-D shape of its quant mode.

It then computes with sageattention's CPU core after converting the MATE-layout scales
back (independently of the code under test), and returns MATE's forms: bf16 out, or fp8
out (v's dtype) with a (B, N, H, 1) float32 out_scale; LSE (B, H, N) float32 of the K it
was given (no smoothing correction: MATE's wrapper adds that in Python).
"""
from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import torch

QuantRecipe = Tuple[int, int, int, int]

# mate/sage_attention_interface.py: _ASM_QUANT_MODE_BY_RECIPE and _DEFAULT_DENSE_RECIPE.
_QUANT_MODE = {(-1, -1, -1, -1): 0, (128, 128, -1, 1): 2, (128, 16, -1, 1): 6, (128, 128, -1, 128): 7}
_DEFAULT_DENSE_RECIPE: QuantRecipe = (128, 128, -1, 1)
_FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)

calls: list[dict[str, Any]] = []  # one record per accepted call, for the tests


class ContractError(RuntimeError):
    """What the real binding's TVM_FFI_ICHECK would raise (or a silent misread would be)."""


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ContractError(msg)


def _expect_shape(t: torch.Tensor, shape: tuple, name: str) -> None:
    _require(tuple(t.shape) == tuple(shape), f"{name}: expected shape {tuple(shape)}, got {tuple(t.shape)}")


def _check_scale(t: Any, shape: tuple, name: str, device: torch.device) -> None:
    _require(isinstance(t, torch.Tensor), f"{name}: expected a tensor, got {type(t).__name__}")
    _require(t.dim() == 4, f"{name}: expected a 4-D tensor, got {t.dim()}-D shape {tuple(t.shape)}")
    _expect_shape(t, shape, name)
    _require(t.dtype == torch.float32, f"{name}: the kernel reads float32, got {t.dtype}")
    _require(t.is_contiguous(), f"{name}: must be contiguous (CHECK_INPUT), got strides {t.stride()}")
    _require(t.device == device, f"{name}: on {t.device}, q is on {device}")


def _check_codes(q: Any, k: Any, v: Any) -> bool:
    for name, t in (("q", q), ("k", k), ("v", v)):
        _require(isinstance(t, torch.Tensor), f"{name}: expected a tensor, got {type(t).__name__}")
        _require(t.dim() == 4, f"{name}: expected 4-D (B, N, H, D), got shape {tuple(t.shape)}")
        _require(t.stride(-1) == 1 or t.shape[-1] == 1, f"{name}: last dim must be contiguous")
        _require(t.device == q.device, f"{name}: on {t.device}, q is on {q.device}")
    qk_int8 = q.dtype == torch.int8 and k.dtype == torch.int8 and v.dtype in _FP8
    if not qk_int8:
        _require(q.dtype == k.dtype, f"q and k must have same dtype, got {q.dtype} and {k.dtype}")
        _require(q.dtype == v.dtype, f"q and v must have same dtype, got {q.dtype} and {v.dtype}")
        _require(q.dtype in _FP8, f"qkv must be e4m3 or e5m2 (or int8 q/k with fp8 v), got {q.dtype}")
    return qk_int8


def _scale_shapes(mode: int, b: int, nq: int, nk: int, h: int, hkv: int, dv: int) -> tuple:
    # csrc/sage_attention_asm.mu, sage_attn_quantized_asm: the expect_shape calls.
    if mode == 0:
        return (1, 1, 1, 1), (1, 1, 1, 1), (1, 1, 1, 1)
    gq = math.ceil(nq / 128)
    gk = math.ceil(nk / 128) * 128 // 16 if mode == 6 else math.ceil(nk / 128)
    v_shape = (b, math.ceil(nk / 128), hkv, 1) if mode == 7 else (b, 1, hkv, dv)
    return (b, gq, h, 1), (b, gk, hkv, 1), v_shape


def _to_ours(scale: torch.Tensor, mode: int, is_v: bool) -> torch.Tensor:
    """MATE layout -> the (B, H, G) / (B, H, Dv) / (1, 1, 1) layouts sageattention's core reads."""
    if mode == 0:
        return scale.reshape(1, 1, 1)
    if is_v and mode != 7:
        return scale[:, 0]  # (B, 1, H, Dv) -> (B, H, Dv)
    return scale[..., 0].permute(0, 2, 1)  # (B, G, H, 1) -> (B, H, G)


def sage_attn_quantized(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_scale: Optional[torch.Tensor] = None,
    k_scale: Optional[torch.Tensor] = None,
    v_scale: Optional[torch.Tensor] = None,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    quant_recipe: Optional[QuantRecipe] = None,
    return_lse: bool = False,
    fp8_output: bool = False,
    backend: str = "mubin",
):
    recipe = quant_recipe or _DEFAULT_DENSE_RECIPE
    if backend != "mubin":
        raise NotImplementedError(f"Unsupported SageAttention quantized backend: {backend}.")
    if softmax_scale is None:
        softmax_scale = q.shape[-1] ** -0.5
    _require(type(softmax_scale) is float, f"softmax_scale: a Python float, got {type(softmax_scale).__name__}")
    for name, flag in (("causal", causal), ("return_lse", return_lse), ("fp8_output", fp8_output)):
        _require(isinstance(flag, bool), f"{name}: a bool, got {type(flag).__name__}")
    if not isinstance(recipe, tuple) or recipe not in _QUANT_MODE:
        raise NotImplementedError(f"SageAttention dense ASM path does not support quant_recipe={recipe}.")
    mode = _QUANT_MODE[recipe]

    qk_int8 = _check_codes(q, k, v)
    b, nq, h, d = q.shape
    nk, hkv, dv = k.shape[1], k.shape[2], v.shape[3]
    _require(hkv > 0 and h % hkv == 0, f"nheads ({h}) must be divisible by nheads_kv ({hkv})")
    _require(0 < d <= 128, f"headdim_qk must be in 1..128, got {d}")
    _require(0 < dv <= 128, f"headdim_v must be in 1..128, got {dv}")
    _expect_shape(k, (b, nk, hkv, d), "k")
    _expect_shape(v, (b, nk, hkv, dv), "v")
    _require(k.numel() < 2**31, "k: the binding counts its elements in int32")
    qs_shape, ks_shape, vs_shape = _scale_shapes(mode, b, nq, nk, h, hkv, dv)
    for name, t, shape in (("q_scale", q_scale, qs_shape), ("k_scale", k_scale, ks_shape),
                           ("v_scale", v_scale, vs_shape)):
        _check_scale(t, shape, name, q.device)
    calls.append({"recipe": recipe, "mode": mode, "qk_int8": qk_int8, "q_shape": tuple(q.shape),
                  "causal": causal, "return_lse": return_lse, "fp8_output": fp8_output})

    from sageattention._backends.cpu import CpuBackend  # the computation: our CPU core

    result = CpuBackend().attention_quantized(
        q, k, v, _to_ours(q_scale, mode, False), _to_ours(k_scale, mode, False), _to_ours(v_scale, mode, True),
        softmax_scale, causal, recipe, True, fp8_output, k_mean=None, out_dtype=torch.bfloat16,
    )
    if fp8_output:
        out, out_scale, lse = result
        _require(out.dtype == v.dtype, "fake: fp8 output must have v's dtype")
        return (out, out_scale, lse) if return_lse else (out, out_scale)
    out, lse = result
    return (out, lse) if return_lse else out


def sage_attn_quantized_with_kvcache(*args: Any, **kwargs: Any):
    raise NotImplementedError("fake MATE: the paged KV-cache entry point is outside sageattention's scope")


__all__ = ["sage_attn_quantized", "sage_attn_quantized_with_kvcache"]
