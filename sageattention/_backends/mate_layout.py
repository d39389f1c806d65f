"""Our scale layouts -> the layouts MATE's dense kernel reads.

MATE's `sage_attn_quantized` (mate/sage_attention_interface.py, binding
csrc/sage_attention_asm.mu) takes every scale as a contiguous float32 4-D tensor and
reads it with the strides of that shape, so the shape must be exact:

| scale                       | ours (docs/DESIGN.md)  | MATE                           |
|-----------------------------|------------------------|--------------------------------|
| Q, K per token group        | (B, H, G)              | (B, G, H, 1)                   |
| per tensor                  | (1, 1, 1)              | (1, 1, 1, 1)                   |
| V per channel               | (B, Hkv, Dv)           | (B, 1, Hkv, Dv)                |
| V per 128-token block       | (B, Hkv, G)            | (B, G, Hkv, 1)                 |

The token grouping itself is the same on both sides (docs/CONTRACT.md §2): Q per
128-token block; K per 128-token block, or under the per-thread recipe 8 groups per
block, token t in group (t // 8) % 8, so G = 8 * ceil(N / 128) (MATE's quant mode 6).
"""
from __future__ import annotations

import torch

from .._recipes import PER_BLOCK, PER_BLOCK_V, PER_TENSOR, PER_THREAD, QuantRecipe

# MATE's dense recipes and the kernel quant mode each selects (MATE derives the mode from
# the recipe itself; the table is here so one place names what MATE supports).
MATE_QUANT_MODES: dict[QuantRecipe, int] = {
    PER_TENSOR: 0,
    PER_BLOCK: 2,
    PER_THREAD: 6,
    PER_BLOCK_V: 7,
}

# MATE's kernel bucket covers head dims up to 128 (binding: headdim_qk/headdim_v <= 128).
MATE_MAX_HEAD_DIM = 128

# The binding holds element counts and strides in int32.
MATE_MAX_ELEMENTS = 2**31 - 1


def token_scale(scale: torch.Tensor) -> torch.Tensor:
    """Q/K (or V per-block) scale: (B, H, G) -> (B, G, H, 1); (1, 1, 1) -> (1, 1, 1, 1)."""
    if scale.dim() != 3:
        raise ValueError(f"scale: expected our 3-D (B, H, G) layout, got shape {tuple(scale.shape)}")
    return scale.float().transpose(1, 2).unsqueeze(-1).contiguous()


def channel_scale(scale: torch.Tensor) -> torch.Tensor:
    """V per-channel scale: (B, Hkv, Dv) -> (B, 1, Hkv, Dv)."""
    if scale.dim() != 3:
        raise ValueError(f"v_scale: expected our 3-D (B, Hkv, Dv) layout, got shape {tuple(scale.shape)}")
    return scale.float().unsqueeze(1).contiguous()
