"""sageattn_varlen: packed variable-length sequences, (total, H, D) tensors + cu_seqlens."""
from __future__ import annotations

from typing import Any, List, Optional

import torch

from ._backends import get_backend
from ._op_registry import COMPOSITE, define_op
from ._grad import guard_forward_only
from ._keywords import resolve_aliases
from ._recipes import TRITON_BLOCKS
from ._validate import check_nhd_shapes, check_qkv_tensors, check_tensor, known_true, resolve_sm_scale

_CU_DTYPES = (torch.int32, torch.int64)


def _check_cu_values(cu: List[int], total: int, max_seqlen: int, name: str, max_name: str) -> None:
    if cu[0] != 0:
        raise ValueError(f"{name}: must start at 0, got {cu[0]}")
    if any(b < a for a, b in zip(cu, cu[1:])):
        raise ValueError(f"{name}: must be non-decreasing, got {cu}")
    if cu[-1] != total:
        raise ValueError(f"{name}: must end at the packed length {total}, got {cu[-1]}")
    longest = max((b - a for a, b in zip(cu, cu[1:])), default=0)
    if longest > max_seqlen:
        raise ValueError(f"{max_name}: {max_seqlen} is smaller than the longest sequence ({longest})")


def _check_max_seqlens(max_seqlen_q: Any, max_seqlen_k: Any) -> None:
    for name, m in (("max_seqlen_q", max_seqlen_q), ("max_seqlen_k", max_seqlen_k)):
        # torch.SymInt: flash-attn callers pass `seqlens.max().item()`, a traced value
        if isinstance(m, bool) or not isinstance(m, (int, torch.SymInt)) or known_true(m < 0):
            raise ValueError(f"{name}: expected a non-negative int, got {m!r}")


def _varlen_attention_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                      cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int, sm_scale: float,
                      causal: bool, smooth_k: bool) -> torch.Tensor:
    # Sizes that depended on data while tracing were not checked by the caller: they are here.
    check_nhd_shapes(q[None], k[None], v[None])
    _check_max_seqlens(max_seqlen_q, max_seqlen_k)
    cu_q = [int(x) for x in cu_seqlens_q.tolist()]
    cu_k = [int(x) for x in cu_seqlens_k.tolist()]
    _check_cu_values(cu_q, q.shape[0], max_seqlen_q, "cu_seqlens_q", "max_seqlen_q")
    _check_cu_values(cu_k, k.shape[0], max_seqlen_k, "cu_seqlens_k", "max_seqlen_k")
    backend = get_backend(q.device)
    out = torch.zeros((q.shape[0], q.shape[1], v.shape[2]), dtype=q.dtype, device=q.device)
    for i in range(len(cu_q) - 1):
        q0, q1, k0, k1 = cu_q[i], cu_q[i + 1], cu_k[i], cu_k[i + 1]
        if q1 == q0:
            continue
        # (1, n, H, D) views of one sequence: quantized on its own, as upstream does per sequence.
        qs, ks, vs = q[None, q0:q1], k[None, k0:k1], v[None, k0:k1]
        if k1 == k0:  # no keys: output rows stay 0 (docs/CONTRACT.md §1.5)
            continue
        qq = backend.quantize_qk(qs, ks, quant_recipe=TRITON_BLOCKS, qk_quant_dtype="int8", smooth_k=smooth_k)
        o = backend.attention_quantized(qq.q_codes, qq.k_codes, vs, qq.q_scale, qq.k_scale, None, sm_scale,
                                        causal, TRITON_BLOCKS, False, False, k_mean=qq.k_mean,
                                        out_dtype=q.dtype)
        out[q0:q1] = o[0]
    return out


def _varlen_attention_fake(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, sm_scale, causal, smooth_k):
    return q.new_empty((q.shape[0], q.shape[1], v.shape[2]))


_varlen_attention = define_op(
    "varlen_attention(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens_q, Tensor cu_seqlens_k, SymInt max_seqlen_q,"
    " SymInt max_seqlen_k, float sm_scale, bool causal, bool smooth_k) -> Tensor",
    _varlen_attention_fake, {COMPOSITE: _varlen_attention_impl})


def sageattn_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                    cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int, is_causal: bool = False,
                    sm_scale: Optional[float] = None, smooth_k: bool = True, **kwargs: Any) -> torch.Tensor:
    """Attention over packed variable-length sequences (upstream's varlen entry).

    q: (total_q, Hq, D), k/v: (total_k, Hkv, D); sequence i spans
    cu_seqlens_q[i]:cu_seqlens_q[i+1] (int32 or int64, starting at 0, non-decreasing,
    ending at total). Causal masking applies within each sequence, top-left aligned.
    int8 Q·Kᵀ with Q per 128-token and K per 64-token blocks of each sequence, 16-bit P·V.
    Returns (total_q, Hq, Dv) in q's dtype. `causal` and `softmax_scale` (flash-attn's
    spellings) are honoured as is_causal and sm_scale. The packed lengths and max_seqlen_*
    may depend on data under torch.compile (checked in the op on the real tensors).
    """
    is_causal, sm_scale = resolve_aliases(is_causal, sm_scale, kwargs)
    check_qkv_tensors(q, k, v)
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.dim() != 3:
            raise ValueError(f"{name}: expected a packed (total, H, D) tensor, got shape {tuple(x.shape)}")
    check_nhd_shapes(q[None], k[None], v[None])
    for name, cu in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        check_tensor(cu, name)
        if cu.device.type not in ("cpu", q.device.type):
            raise ValueError(f"{name}: must be on the CPU or on q's device ({q.device}), got {cu.device}")
        if cu.dim() != 1 or cu.dtype not in _CU_DTYPES or cu.numel() < 1:
            raise ValueError(f"{name}: expected a non-empty 1-D int32 or int64 tensor, got {cu.dtype} {tuple(cu.shape)}")
    if cu_seqlens_q.numel() != cu_seqlens_k.numel():
        raise ValueError(f"cu_seqlens_q, cu_seqlens_k: batch sizes differ "
                         f"({cu_seqlens_q.numel() - 1} vs {cu_seqlens_k.numel() - 1})")
    _check_max_seqlens(max_seqlen_q, max_seqlen_k)
    backend = get_backend(q.device)  # a clear error for devices without a backend, before any work
    if not backend.varlen:
        raise NotImplementedError(f"sageattn_varlen: not supported by the {backend.name} backend ({backend.library})")
    scale = resolve_sm_scale(sm_scale, q.shape[2])
    out = _varlen_attention(q, k, v, cu_seqlens_q.cpu(), cu_seqlens_k.cpu(), max_seqlen_q, max_seqlen_k,
                            scale, bool(is_causal), bool(smooth_k))
    return guard_forward_only(out, q, k, v)
