"""sageattention is forward-only: make backward through it fail loudly, never silently."""
from __future__ import annotations

import torch

from ._op_registry import COMPOSITE, define_op

MESSAGE = ("sageattention is forward only: its quantized attention has no backward. "
           "Use torch.nn.functional.scaled_dot_product_attention where gradients are needed.")


def _raise_forward_only(grad: torch.Tensor) -> torch.Tensor:
    raise RuntimeError(MESSAGE)


# The raise lives in an op, not in backward() itself: torch.compile traces backward()
# ahead of time and would refuse a function that always raises; an op runs only when
# backward really happens.
_forward_only_backward = define_op("forward_only_backward(Tensor grad) -> Tensor",
                                   lambda grad: torch.empty_like(grad), {COMPOSITE: _raise_forward_only})


class _ForwardOnly(torch.autograd.Function):
    @staticmethod
    def forward(ctx, out: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.num_inputs = len(inputs)
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return (_forward_only_backward(grad),) + (None,) * ctx.num_inputs


def guard_forward_only(out: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
    """Attach a backward that raises when any input requires grad (and grad mode is on)."""
    if torch.is_grad_enabled() and any(x.requires_grad for x in inputs):
        return _ForwardOnly.apply(out, *inputs)
    return out
