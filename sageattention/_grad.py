"""sageattention is forward-only: make backward through it fail loudly, never silently."""
from __future__ import annotations

import torch


class _ForwardOnly(torch.autograd.Function):
    @staticmethod
    def forward(ctx, out: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return out.view_as(out)

    @staticmethod
    def backward(ctx, *grads):  # type: ignore[override]
        raise RuntimeError(
            "sageattention is forward only: its quantized attention has no backward. "
            "Use torch.nn.functional.scaled_dot_product_attention where gradients are needed."
        )


def guard_forward_only(out: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
    """Attach a backward that raises when any input requires grad (and grad mode is on)."""
    if torch.is_grad_enabled() and any(x.requires_grad for x in inputs):
        return _ForwardOnly.apply(out, *inputs)
    return out
