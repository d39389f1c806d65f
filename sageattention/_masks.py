"""attn_mask handling shared by every entry point that takes one (SDPA conventions)."""
from __future__ import annotations

from typing import Any, Optional

import torch

from ._validate import known_to_differ


def prepare_mask(attn_mask: Any, is_causal: bool, b: int, hq: int, nq: int, nk: int,
                 device: Optional[torch.device] = None) -> Optional[torch.Tensor]:
    """Validate and bring a mask to 4-D (B|1, H|1, Nq|1, Nk|1) without copying bool masks.

    bool: True keeps a key. Floating: added to the scores (natural-log units); a finite
    value stays finite (docs/CONTRACT.md §3), so a row covered by -finfo(dtype).max is a
    softmax over equal scores, as in SDPA. A fully masked row (False / -inf) gives output
    0 and LSE -inf.
    """
    if attn_mask is None:
        return None
    if not isinstance(attn_mask, torch.Tensor):
        raise TypeError(f"attn_mask: expected a torch.Tensor or None, got {type(attn_mask).__name__}")
    if device is not None and attn_mask.device != device:
        raise ValueError(f"attn_mask: must be on {device} like q, got {attn_mask.device}")
    if is_causal:
        raise ValueError("attn_mask: cannot be combined with is_causal=True (as in SDPA); fold causality into the mask")
    if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
        raise TypeError(f"attn_mask: expected a bool or floating-point mask, got {attn_mask.dtype}")
    if attn_mask.dim() > 4:
        raise ValueError(f"attn_mask: expected at most 4 dims, got shape {tuple(attn_mask.shape)}")
    mask = attn_mask
    while mask.dim() < 4:
        mask = mask.unsqueeze(0)
    target = (b, hq, nq, nk)
    for have, want in zip(mask.shape, target):
        # sizes from data are decided by the core's own check when not known while tracing
        if known_to_differ(have, want) and known_to_differ(have, 1):
            raise ValueError(
                f"attn_mask: shape {tuple(attn_mask.shape)} does not broadcast to (B, H, Nq, Nk) = {target}"
            )
    if mask.dtype == torch.float64:
        # the core adds float32: a finite value beyond its range saturates, never becomes -inf
        fmax = torch.finfo(torch.float32).max
        mask = torch.where(torch.isinf(mask), mask, mask.clamp(-fmax, fmax))
    if mask.dtype != torch.bool and mask.dtype != torch.float32:
        mask = mask.float()
    return mask
