"""flash-attn and SDPA keywords that clients pass by habit (docs/CONTRACT.md §6).

yunchang calls `sageattn(..., causal=True, softmax_scale=s)` as it would call flash-attn,
and diffusers' backends pass SDPA's `scale`. Upstream SageAttention swallows them in
**kwargs, which silently computes non-causal attention at the default scale. We honour
them as aliases instead:

- `causal` is `is_causal`; `softmax_scale` and `scale` are `sm_scale`.
- An alias counts as given when it is not its "absent" value (None; for `causal`, the
  canonical default False would be indistinguishable from an explicit one). The canonical
  argument counts as given when it is not at its default (False / None): a canonical
  argument at its default never disagrees, so `is_causal=False, causal=True` is causal.
- Two given spellings that disagree are a ValueError naming both.
- `dropout_p` other than 0 is warned about once and ignored: inference kernels have no
  dropout.
"""
from __future__ import annotations

import os
import sys
import warnings
from typing import Any, Optional, Tuple

from ._validate import resolve_sm_scale_value

_SCALE_ALIASES = ("softmax_scale", "scale")
_warned_dropout = False


def resolve_aliases(is_causal: Any, sm_scale: Any, kwargs: dict) -> Tuple[bool, Optional[float]]:
    """(is_causal, sm_scale) after folding in the flash-attn/SDPA spellings in kwargs.
    sm_scale stays None when no spelling gave one (the entry point's default applies)."""
    _warn_dropout(kwargs.get("dropout_p"))
    causal = _resolve_causal(is_causal, kwargs)
    return causal, _resolve_scale(sm_scale, kwargs)


def _resolve_causal(is_causal: Any, kwargs: dict) -> bool:
    canonical = bool(is_causal)
    alias = kwargs.get("causal")
    if alias is None:
        return canonical
    alias = bool(alias)
    if canonical and not alias:
        raise ValueError(f"is_causal={is_causal!r} and causal={kwargs['causal']!r} disagree; pass one of them")
    return canonical or alias


def _resolve_scale(sm_scale: Any, kwargs: dict) -> Optional[float]:
    given = [("sm_scale", sm_scale)] if sm_scale is not None else []
    given += [(name, kwargs[name]) for name in _SCALE_ALIASES if kwargs.get(name) is not None]
    values = [(name, resolve_sm_scale_value(value, name)) for name, value in given]
    for name, value in values[1:]:
        first_name, first = values[0]
        if value != first:
            raise ValueError(f"{first_name}={first!r} and {name}={value!r} disagree; pass one of them")
    return values[0][1] if values else None


def _warn_dropout(dropout_p: Any) -> None:
    global _warned_dropout
    if dropout_p is None or _warned_dropout:
        return
    try:
        zero = float(dropout_p) == 0.0
    except (TypeError, ValueError):
        zero = False
    if not zero:
        _warned_dropout = True
        warnings.warn(f"sageattention ignores dropout_p={dropout_p!r}: there is no dropout in inference kernels",
                      UserWarning, stacklevel=_first_frame_outside_package())


def _first_frame_outside_package() -> int:
    """The warnings.warn stacklevel of the caller's frame, however many of our frames
    (entry point, argument-order wrappers, _run) lie between."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(2), 2  # level 1 is _warn_dropout, which calls warn
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level
