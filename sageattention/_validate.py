"""Input checks of the public API (docs/CONTRACT.md §4). Every message names the argument."""
from __future__ import annotations

import math
import numbers
from typing import Any, Optional

import torch

MAX_HEAD_DIM = 256
LAYOUTS = ("HND", "NHD")
QK_QUANT_DTYPES = ("int8", "fp8")
INPUT_DTYPES = (torch.float16, torch.bfloat16)


def check_tensor(x: Any, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    return x


def check_qkv_tensors(q: Any, k: Any, v: Any) -> None:
    """q, k, v are tensors of one 16-bit float dtype on one device."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        check_tensor(x, name)
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.dtype not in INPUT_DTYPES:
            raise TypeError(f"{name}: dtype {x.dtype} is not supported; use torch.float16 or torch.bfloat16")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share one dtype, got q={q.dtype}, k={k.dtype}, v={v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on the same device, got q={q.device}, k={k.device}, v={v.device}")


def check_qkv(q: Any, k: Any, v: Any, tensor_layout: Any) -> None:
    """Types, dtypes, devices, layout, ranks and shapes of q, k, v."""
    check_qkv_tensors(q, k, v)
    if not isinstance(tensor_layout, str) or tensor_layout not in LAYOUTS:
        # A tensor lands here when SDPA's positional attn_mask meets our signature
        # (`F.scaled_dot_product_attention = sageattn`): name it, do not print it.
        got = (f"a {type(tensor_layout).__name__} of shape {tuple(tensor_layout.shape)}"
               if isinstance(tensor_layout, torch.Tensor) else repr(tensor_layout))
        raise ValueError(f"tensor_layout: expected 'HND' or 'NHD', got {got}")
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.dim() != 4:
            raise ValueError(f"{name}: expected a 4-D tensor in {tensor_layout} layout, got shape {tuple(x.shape)}")
    qn, kn, vn = (to_nhd(x, tensor_layout) for x in (q, k, v))
    check_nhd_shapes(qn, kn, vn)


def known_true(cond: Any) -> bool:
    """A size condition, decided only where its answer is known now.

    Eager sizes are ints and always decided. Under torch.compile a size that depends on
    data (diffusers' varlen packing slices `k[b, :seqlens_k[b]]`) is an unbacked symbol:
    deciding on it would stop the trace, so it counts as false here and the op's own
    kernel, which sees the real tensors, raises the same ValueError (docs/CONTRACT.md §4).
    """
    if not _is_compiling():
        return bool(cond)
    from torch.fx.experimental import symbolic_shapes as sym  # slow to import: tracing only

    decide = getattr(sym, "guard_or_false", None)  # torch >= 2.7; older: what is provable
    return bool(decide(cond)) if decide is not None else bool(sym.statically_known_true(cond))


def known_to_differ(a: Any, b: Any) -> bool:
    return known_true(a != b)


def _is_compiling() -> bool:
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    return bool(is_compiling()) if is_compiling is not None else False


def check_nhd_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Shape rules on (B, N, H, D) views."""
    if known_to_differ(q.shape[0], k.shape[0]) or known_to_differ(k.shape[0], v.shape[0]):
        raise ValueError(f"q, k, v: batch sizes differ (q={q.shape[0]}, k={k.shape[0]}, v={v.shape[0]})")
    if known_to_differ(k.shape[1], v.shape[1]):
        raise ValueError(f"k, v: sequence lengths differ (k={k.shape[1]}, v={v.shape[1]})")
    if known_to_differ(k.shape[2], v.shape[2]):
        raise ValueError(f"k, v: head counts differ (k={k.shape[2]}, v={v.shape[2]})")
    if known_to_differ(q.shape[3], k.shape[3]):
        raise ValueError(f"q, k: head dims differ (q={q.shape[3]}, k={k.shape[3]})")
    hq, hkv = q.shape[2], k.shape[2]
    if hkv == 0 and hq > 0 or (hkv > 0 and hq % hkv != 0):
        raise ValueError(f"q: query heads ({hq}) must be a multiple of key/value heads ({hkv})")
    for name, d in (("q", q.shape[3]), ("v", v.shape[3])):
        if d < 1 or d > MAX_HEAD_DIM:
            raise ValueError(f"{name}: head dim {d} is outside the supported range [1, {MAX_HEAD_DIM}]")


def to_nhd(x: torch.Tensor, tensor_layout: str) -> torch.Tensor:
    """A (B, N, H, D) view of x; never a copy."""
    return x.transpose(1, 2) if tensor_layout == "HND" else x


def check_flag(value: Any, name: str) -> bool:
    """One of our on/off options: a bool (numpy's too) or the ints 0 / 1. Anything else
    (a string such as "no" is truthy) is a ValueError naming the option, never a guess."""
    numpy_bool = type(value).__module__ == "numpy" and type(value).__name__ in ("bool_", "bool")
    if isinstance(value, bool) or numpy_bool:
        return bool(value)
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"{name}: expected True or False, got {value!r}")


def check_qk_quant_dtype(qk_quant_dtype: Any) -> str:
    if qk_quant_dtype not in QK_QUANT_DTYPES:
        raise ValueError(f"qk_quant_dtype: expected 'int8' or 'fp8', got {qk_quant_dtype!r}")
    return str(qk_quant_dtype)


def resolve_sm_scale(sm_scale: Optional[float], head_dim: int) -> float:
    """Default 1/sqrt(D). NaN and inf are rejected; 0 and negative values are computed faithfully."""
    if sm_scale is None:
        return 1.0 / math.sqrt(head_dim)
    return resolve_sm_scale_value(sm_scale, "sm_scale")


def resolve_sm_scale_value(sm_scale: Any, name: str) -> float:
    """A given softmax scale (a real number or a one-element tensor) as a finite float;
    `name` is the spelling the caller used (sm_scale, softmax_scale or scale)."""
    if isinstance(sm_scale, torch.Tensor):
        if sm_scale.numel() != 1:
            raise ValueError(f"{name}: expected a number")
        sm_scale = float(sm_scale.item())
    if isinstance(sm_scale, (str, bytes, bool)) or not isinstance(sm_scale, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(sm_scale).__name__}")
    value = float(sm_scale)
    if not math.isfinite(value):
        raise ValueError(f"{name}: must be finite, got {value}")
    return value


def check_same_device(x: Optional[torch.Tensor], device: torch.device, name: str) -> None:
    if x is not None and x.device != device:
        raise ValueError(f"{name}: must be on {device} like q, got {x.device}")


def check_out_buffer(buf: Any, shape: tuple, dtype: torch.dtype, device: torch.device, name: str) -> None:
    """A caller-provided output: exact shape and dtype, same device, no self-overlap."""
    t = check_tensor(buf, name)
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(t.shape)}")
    if t.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype}, got {t.dtype}")
    if t.device != device:
        raise ValueError(f"{name}: must be on {device}, got {t.device}")
    if torch._debug_has_internal_overlap(t) != 0:
        raise ValueError(f"{name}: its elements overlap in memory (zero or overlapping strides)")
