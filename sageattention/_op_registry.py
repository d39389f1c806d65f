"""The torch.library namespace `sageattention::`, shared by every backend and by the
device-neutral ops (_grad.py, varlen.py).

Each op is defined once with a fake (meta) kernel, which is all torch.compile needs to
trace it, and one real kernel per dispatch key: the C++ core registers under "CPU", the
Triton backend under "CUDA" (ROCm builds of torch use the same key) and under "CPU" for
its own ops, which run in Triton's interpreter when SAGEATTN_BACKEND=triton forces it.
Ops that only compose other calls register under "CompositeExplicitAutograd".

Ops are defined with torch.library.Library rather than the @custom_op decorator: the
decorator wraps every kernel in a dynamo guard whose first call imports torch._dynamo,
several seconds that every process would pay on its first attention.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch

NAMESPACE = "sageattention"
_LIB = torch.library.Library(NAMESPACE, "DEF")
# torch 2.3 names the fake-kernel registration impl_abstract; 2.4 renamed it register_fake.
_register_fake = getattr(torch.library, "register_fake", None) or torch.library.impl_abstract

COMPOSITE = "CompositeExplicitAutograd"


def define_op(schema: str, fake: Callable, kernels: Mapping[str, Callable]):
    """Define `sageattention::<schema>` with a fake kernel and one kernel per dispatch key
    ("CPU", "CUDA" or COMPOSITE); returns the op's default overload."""
    if not kernels:
        raise ValueError(f"define_op: {schema!r} needs at least one kernel")
    name = schema.split("(", 1)[0]
    _LIB.define(schema)
    for key, kernel in kernels.items():
        _LIB.impl(name, kernel, key)
    _register_fake(f"{NAMESPACE}::{name}", fake, lib=_LIB)
    return getattr(torch.ops.sageattention, name).default


__all__ = ["COMPOSITE", "NAMESPACE", "define_op"]
