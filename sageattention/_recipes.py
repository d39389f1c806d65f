"""Quantization recipes (docs/CONTRACT.md §2) and how they map onto scale groups."""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

QuantRecipe = Tuple[int, int, int, int]

PER_TENSOR: QuantRecipe = (-1, -1, -1, -1)
PER_BLOCK: QuantRecipe = (128, 128, -1, 1)
PER_THREAD: QuantRecipe = (128, 16, -1, 1)
PER_BLOCK_V: QuantRecipe = (128, 128, -1, 128)
DEFAULT_RECIPE: QuantRecipe = PER_THREAD

SUPPORTED_RECIPES: dict[QuantRecipe, str] = {
    PER_TENSOR: "per-tensor",
    PER_BLOCK: "per-block",
    PER_THREAD: "per-thread (default)",
    PER_BLOCK_V: "per-block V",
}


@dataclass(frozen=True)
class Grouping:
    """Token n uses scale group (n // block) * groups + ((n % block) // stride) % groups.

    block == -1 means the whole axis. per_tensor means one scale for every batch and head.
    """

    block: int
    groups: int
    stride: int
    per_tensor: bool = False

    def num_groups(self, n: int) -> int:
        if self.block <= 0:
            return self.groups
        return -(-n // self.block) * self.groups

    def as_triple(self) -> tuple[int, int, int]:
        return (self.block, self.groups, self.stride)


@dataclass(frozen=True)
class ResolvedRecipe:
    recipe: QuantRecipe
    q: Grouping
    k: Grouping
    v: Grouping
    v_per_channel: bool


_WHOLE = Grouping(-1, 1, 0, per_tensor=True)
_BLOCK128 = Grouping(128, 1, 128)


def _resolve_table() -> dict[QuantRecipe, ResolvedRecipe]:
    return {
        PER_TENSOR: ResolvedRecipe(PER_TENSOR, _WHOLE, _WHOLE, _WHOLE, v_per_channel=False),
        PER_BLOCK: ResolvedRecipe(PER_BLOCK, _BLOCK128, _BLOCK128, _WHOLE, v_per_channel=True),
        PER_THREAD: ResolvedRecipe(PER_THREAD, _BLOCK128, Grouping(128, 8, 8), _WHOLE, v_per_channel=True),
        PER_BLOCK_V: ResolvedRecipe(PER_BLOCK_V, _BLOCK128, _BLOCK128, _BLOCK128, v_per_channel=False),
    }


_TABLE = _resolve_table()


def _supported_list() -> str:
    return ", ".join(f"{r} ({name})" for r, name in SUPPORTED_RECIPES.items())


def normalize_recipe(quant_recipe: Sequence[int]) -> QuantRecipe:
    """Validate a recipe tuple; unsupported ones raise NotImplementedError."""
    try:
        # operator.index: 128.5 or "128" are not recipe entries (int() would truncate/parse them).
        recipe = tuple(operator.index(x) for x in quant_recipe)
    except (TypeError, ValueError):
        raise NotImplementedError(
            f"quant_recipe: expected a tuple of 4 ints, got {quant_recipe!r}; supported: {_supported_list()}"
        ) from None
    if recipe not in _TABLE:
        raise NotImplementedError(
            f"quant_recipe: {quant_recipe!r} is not supported; supported: {_supported_list()}"
        )
    return recipe  # type: ignore[return-value]


# Upstream-named variants (docs/CONTRACT.md §6) take qk_quant_gran values of their own.
# "per_thread" is the default recipe. "per_warp" is Q per 32 tokens (4 groups of a
# 128-token block) and K per 64-token block, upstream's warp-level granularity.
# The Triton / varlen kernels use Q per 128-token block and K per 64-token block.
PER_WARP = ResolvedRecipe((128, 64, -1, 1), Grouping(128, 4, 32), Grouping(64, 1, 64), _WHOLE, v_per_channel=True)
TRITON_BLOCKS = ResolvedRecipe((128, 64, -1, 1), _BLOCK128, Grouping(64, 1, 64), _WHOLE, v_per_channel=True)


def resolve_named(qk_quant_gran: Optional[str], quant_recipe: Optional[Sequence[int]] = None) -> ResolvedRecipe:
    """Granularity of the upstream-named CUDA variants: "per_warp" or "per_thread"."""
    if quant_recipe is not None:
        return _TABLE[normalize_recipe(quant_recipe)]
    if qk_quant_gran is None or qk_quant_gran == "per_thread":
        return _TABLE[DEFAULT_RECIPE]
    if qk_quant_gran == "per_warp":
        return PER_WARP
    raise NotImplementedError(
        f"qk_quant_gran: expected 'per_warp' or 'per_thread', got {qk_quant_gran!r}"
    )


def as_resolved(recipe: "QuantRecipe | ResolvedRecipe") -> ResolvedRecipe:
    return recipe if isinstance(recipe, ResolvedRecipe) else _TABLE[normalize_recipe(recipe)]


def resolve(quant_recipe: Optional[Sequence[int]], qk_quant_gran: Optional[str] = "per_thread") -> ResolvedRecipe:
    """An explicit recipe wins; otherwise qk_quant_gran must be 'per_thread' (or None)."""
    if quant_recipe is not None:
        return _TABLE[normalize_recipe(quant_recipe)]
    if qk_quant_gran is None or qk_quant_gran == "per_thread":
        return _TABLE[DEFAULT_RECIPE]
    raise NotImplementedError(
        f"qk_quant_gran: {qk_quant_gran!r} is not supported as a shortcut (only 'per_thread'); "
        f"pass quant_recipe= with one of: {_supported_list()}"
    )
