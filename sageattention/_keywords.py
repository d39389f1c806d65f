"""Keyword arguments that are not ours, shared by every public entry point (dense and
varlen), so the entry modules need not import each other for it."""
from __future__ import annotations

import warnings
from typing import Dict, Optional, Set

# flash-attn / SDPA keywords that callers such as yunchang pass by habit. Upstream drops
# them silently, which gives different attention than asked for: we warn, once per name.
FOREIGN_KWARGS: Dict[str, Optional[str]] = {
    "causal": "is_causal",
    "softmax_scale": "sm_scale",
    "scale": "sm_scale",
    "dropout_p": None,
}
_warned: Set[str] = set()


def warn_foreign_kwargs(kwargs: dict, stacklevel: int) -> None:
    """Warn once per name about a flash-attn/SDPA keyword that sageattention ignores.
    `stacklevel` counts from our caller: 1 is the line that calls this function."""
    for name, ours in FOREIGN_KWARGS.items():
        if name in kwargs and name not in _warned:
            _warned.add(name)
            hint = f"; use {ours}=" if ours else " (no dropout in sageattention)"
            warnings.warn(f"sageattention ignores the keyword '{name}'{hint}", UserWarning,
                          stacklevel=stacklevel + 1)
