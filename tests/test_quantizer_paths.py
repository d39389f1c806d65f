"""Quantizer ISA paths: every SIMD path gives BITWISE the scalar path's codes and scales.

For each CPU ISA path this machine and build can run (``sageattention._lib``), the
low-level quantizers ``sageattention.ops.quantize_qk`` / ``quantize_v`` must return the
same bits as the scalar path (the definition): codes, scales (NaN payloads included)
and K means, for bf16 and fp16, int8 and fp8, every recipe, K smoothing on and off,
HND-transposed views (what the public API passes), contiguous NHD and D-strided inputs,
N that is not a multiple of 8 or 128, odd head dims, exact rounding ties, large
magnitudes, and NaN / inf.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterator, List, Sequence, Tuple

import pytest
import torch

import sageattention.ops as ops
import sageattention._lib as _lib
import cpu_isas

RECIPES = [(-1, -1, -1, -1), (128, 128, -1, 1), (128, 16, -1, 1), (128, 128, -1, 128)]
DTYPES = [torch.bfloat16, torch.float16]

ISAS = cpu_isas.isa_params(include_scalar=False)  # each SIMD path against the scalar one


@pytest.fixture(autouse=True)
def _restore_isa_and_threads() -> Iterator[None]:
    # One thread unless a test says otherwise: results must not depend on it (see
    # test_thread_count_does_not_change_bits), and small calls run faster without it.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    _lib.set_cpu_isa("auto")
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- inputs

# (B, N, H, D): N off multiples of 8 / 128, one N spanning several 512-token chunks.
SHAPES = [(2, 300, 2, 64), (1, 133, 2, 7), (1, 37, 2, 1), (2, 129, 1, 40),
          (1, 257, 1, 128), (1, 70, 1, 256), (1, 600, 1, 64)]

# Non-canonical NaNs (both signs, signalling and payload-carrying) so that a path that
# picks a different NaN of a group than the scalar fold shows up in the scale bits.
_NAN_BITS = {torch.bfloat16: [0x7FC0, 0xFFC0, 0x7FA5, 0xFF91], torch.float16: [0x7E00, 0xFE00, 0x7C01, 0xFD37]}


def _layout(x_bhnd: torch.Tensor, layout: str) -> torch.Tensor:
    """A (B, N, H, D) view of a (B, H, N, D) tensor in the requested memory layout."""
    if layout == "hnd":  # what the public API passes for tensor_layout="HND"
        return x_bhnd.transpose(1, 2)
    if layout == "nhd":
        return x_bhnd.transpose(1, 2).contiguous()
    assert layout == "dstride"  # D stride 2 (the kernels' gather path)
    wide = torch.zeros(x_bhnd.shape[:3] + (2 * x_bhnd.shape[3],), dtype=x_bhnd.dtype)
    wide[..., ::2] = x_bhnd
    return wide[..., ::2].transpose(1, 2)


def _ties(shape_bhnd: Tuple[int, ...], gen: torch.Generator, qmax: float) -> torch.Tensor:
    """Values whose quotient by a power-of-two scale lands exactly on rounding ties.

    Column 0 of every row (and row 0 of every column) holds qmax * 2^e, so every token
    group and every channel has amax qmax * 2^e and scale exactly 2^e.
    """
    if qmax == 127.0:  # int8: k + 1/2
        ties = torch.arange(-126, 126, dtype=torch.float32) + 0.5
    else:  # fp8 e4m3: midpoints of neighbouring codes, subnormals and saturation included
        codes = torch.arange(0, 127, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
        mids = (codes[1:] + codes[:-1]) / 2
        ties = torch.cat([mids, -mids, torch.tensor([464.0, -464.0, 2.0 ** -10, 3 * 2.0 ** -10])])
    idx = torch.randint(0, ties.numel(), shape_bhnd, generator=gen)
    e = 2.0 ** torch.randint(-6, 6, (), generator=gen).item()
    x = ties[idx] * e
    x[..., 0] = qmax * e
    x[..., 0, :] = qmax * e
    return x


@functools.lru_cache(maxsize=None)
def _input(shape: Tuple[int, int, int, int], dtype: torch.dtype, kind: str, layout: str,
           seed: int) -> torch.Tensor:
    B, N, H, D = shape
    gen = torch.Generator().manual_seed(seed)
    bhnd = (B, H, N, D)
    if kind == "ties_int8":
        x = _ties(bhnd, gen, 127.0)
    elif kind == "ties_fp8":
        x = _ties(bhnd, gen, 448.0)
    else:
        x = torch.randn(bhnd, generator=gen) * torch.exp(torch.randn((B, H, N, 1), generator=gen))
        x = x + torch.randn((B, H, 1, D), generator=gen) * 2  # channel offsets (K smoothing)
        if kind == "special":
            u = torch.rand(bhnd, generator=gen)
            big = 3e4 if dtype == torch.float16 else 1e30
            x = torch.where(u < 0.01, x * big / (x.abs().max() + 1), x)      # large magnitudes
            x = torch.where((u > 0.5) & (u < 0.51), x * 1e-7, x)             # tiny / subnormal
    x = x.to(dtype)
    if kind == "special":
        flat = x.view(-1)
        n = flat.numel()
        pos = torch.randint(0, n, (8,), generator=gen)
        bits = flat.view(torch.int16)
        for j, nan in enumerate(_NAN_BITS[dtype]):
            bits[pos[j]] = nan - (1 << 16) if nan >= 1 << 15 else nan
        flat[pos[4]] = float("inf")
        flat[pos[5]] = float("-inf")
        flat[pos[6]] = float("inf")
        # Two different NaNs in one row, so "which NaN" matters within a group.
        if x.shape[-1] >= 2:
            row = x.view(-1, x.shape[-1])[min(3, x.numel() // x.shape[-1] - 1)].view(torch.int16)
            row[0] = _NAN_BITS[dtype][2]
            row[-1] = _NAN_BITS[dtype][3] - (1 << 16)
    return _layout(x, layout)


def _cases(kinds: Sequence[str]) -> Iterator[Tuple[Tuple[int, int, int, int], str, str, int]]:
    # Mostly HND views (the public API's layout); contiguous NHD and D-strided inputs
    # rotate through the shapes and kinds.
    layouts = ["hnd", "nhd", "hnd", "dstride"]
    i = 0
    for shape in SHAPES:
        for kind in kinds:
            yield shape, kind, layouts[i % len(layouts)], 1000 + i
            i += 1


# --------------------------------------------------------------------------- compare

def _bits(t):
    if t is None:
        return None
    if t.dtype in (torch.int8, torch.float8_e4m3fn):
        return t.view(torch.uint8)
    assert t.dtype == torch.float32, t.dtype
    return t.view(torch.int32)


def _run(isa: str, fn: Callable[[], Sequence]) -> List:
    _lib.set_cpu_isa(isa)
    try:
        return [_bits(t) for t in fn()]
    finally:
        _lib.set_cpu_isa("auto")


def _assert_same(isa: str, fn: Callable[[], Sequence], names: Sequence[str], what: str) -> None:
    want = _run("scalar", fn)
    got = _run(isa, fn)
    for name, g, w in zip(names, got, want):
        if w is None:
            assert g is None, f"{what}: {name} is None on scalar only"
            continue
        assert g.shape == w.shape, f"{what}: {name} shape {tuple(g.shape)} != {tuple(w.shape)}"
        if not torch.equal(g, w):
            bad = (g != w).nonzero()
            idx = tuple(bad[0].tolist())
            raise AssertionError(
                f"{what}: {name}: {bad.shape[0]} of {g.numel()} differ on {isa}; first at {idx}: "
                f"{isa} {int(g[idx]):#x} scalar {int(w[idx]):#x}")


QK_NAMES = ("q_codes", "q_scale", "k_codes", "k_scale", "k_mean")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: "r" + "_".join(map(str, r)))
@pytest.mark.parametrize("qk_dtype", ["int8", "fp8"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
def test_quantize_qk_matches_scalar(isa: str, recipe, qk_dtype: str, dtype: torch.dtype) -> None:
    for shape, kind, layout, seed in _cases(["randn", "special", f"ties_{qk_dtype}"]):
        q = _input(shape, dtype, kind, layout, seed)
        k = _input(shape, dtype, kind, layout, seed + 500)
        for smooth_k in (False, True):
            what = f"quantize_qk {shape} {kind} {layout} smooth_k={smooth_k}"
            _assert_same(isa, lambda: ops.quantize_qk(q, k, quant_recipe=recipe, qk_quant_dtype=qk_dtype,
                                                      smooth_k=smooth_k), QK_NAMES, what)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: "r" + "_".join(map(str, r)))
@pytest.mark.parametrize("v_dtype", ["fp8", "int8"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
def test_quantize_v_matches_scalar(isa: str, recipe, v_dtype: str, dtype: torch.dtype) -> None:
    for shape, kind, layout, seed in _cases(["randn", "special", f"ties_{v_dtype}"]):
        v = _input(shape, dtype, kind, layout, seed)
        what = f"quantize_v {v_dtype} {shape} {kind} {layout}"
        _assert_same(isa, lambda: ops.quantize_v(v, quant_recipe=recipe, dtype=v_dtype), ("v_codes", "v_scale"),
                     what)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
def test_every_half_value_matches_scalar(isa: str, dtype: torch.dtype) -> None:
    """All 65536 bit patterns of the input type (non-finite ones zeroed, so that the scales
    stay finite and every code is exercised) through the int8 and fp8 encoders."""
    bits = torch.arange(-(1 << 15), 1 << 15, dtype=torch.int32).to(torch.int16)
    x = bits.view(dtype).clone()
    x[~torch.isfinite(x)] = 0
    x = x.view(1, 1, 1024, 64).transpose(1, 2)  # (B, N, H, D) view of an HND tensor
    for recipe in RECIPES:
        for qk_dtype in ("int8", "fp8"):
            _assert_same(isa, lambda: ops.quantize_qk(x, x, quant_recipe=recipe, qk_quant_dtype=qk_dtype,
                                                      smooth_k=False)[:4], QK_NAMES[:4],
                         f"all values {recipe} {qk_dtype}")
        for v_dtype in ("fp8", "int8"):
            _assert_same(isa, lambda: ops.quantize_v(x, quant_recipe=recipe, dtype=v_dtype), ("v_codes", "v_scale"),
                         f"all values quantize_v {recipe} {v_dtype}")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("grouping", [(-1, 3, 0), (64, 4, 8), (100, 5, 0), (7, 7, 1), (-1, 1, 0)],
                         ids=lambda g: "g" + "_".join(map(str, g)))
def test_core_groupings_match_scalar(isa: str, grouping) -> None:
    """Groupings beyond the recipes' (the core takes any (block, groups, stride))."""
    lib = _lib.module()
    block, groups, stride = grouping
    x = _input((2, 301, 2, 40), torch.float16, "special", "hnd", 99)
    mean = torch.randn((2, 2, 40))
    for fp8 in (False, True):
        for with_mean in (False, True):
            def fn():
                n = x.shape[1]
                g = groups if block <= 0 else -(-n // block) * groups
                codes = torch.empty(x.shape, dtype=torch.float8_e4m3fn if fp8 else torch.int8)
                scale = torch.empty((2, 2, g), dtype=torch.float32)
                lib.quantize_tokens(x, codes, scale, block, groups, stride, False, fp8,
                                    mean if with_mean else None, 1)
                return codes, scale
            _assert_same(isa, fn, ("codes", "scale"), f"grouping {grouping} fp8={fp8} mean={with_mean}")


@pytest.mark.parametrize("isa", ISAS)
def test_thread_count_does_not_change_bits(isa: str) -> None:
    shape = (1, 1100, 2, 64)
    q = _input(shape, torch.bfloat16, "special", "hnd", 7)
    k = _input(shape, torch.bfloat16, "randn", "hnd", 8)
    for recipe in RECIPES:
        fn = lambda: (*ops.quantize_qk(q, k, quant_recipe=recipe), *ops.quantize_v(k, quant_recipe=recipe),
                      *ops.quantize_v(k, quant_recipe=recipe, dtype="int8"))
        torch.set_num_threads(1)
        want = _run("scalar", fn)
        torch.set_num_threads(3)
        got = _run(isa, fn)
        for i, (g, w) in enumerate(zip(got, want)):
            assert (g is None and w is None) or torch.equal(g, w), f"{recipe}: output {i} differs"


def test_inputs_exercise_the_edges() -> None:
    """The generators really produce ties, NaNs, infinities and unaligned shapes."""
    x = _input((1, 133, 2, 64), torch.bfloat16, "ties_int8", "hnd", 1).float()
    scale = x.abs().amax() / 127
    y = x / scale
    assert ((y - y.floor()) == 0.5).sum() > 100
    s = _input((1, 133, 2, 64), torch.float16, "special", "hnd", 1)
    assert s.isnan().sum() >= 4 and s.isinf().sum() >= 2
    assert s.stride(-1) == 1 and s.stride(1) == 64 and s.stride(2) == 133 * 64
    r = ops.quantize_qk(s, s, quant_recipe=(128, 16, -1, 1))
    assert r.k_scale.isnan().any()
    d = _input((1, 37, 2, 40), torch.bfloat16, "randn", "dstride", 1)
    assert d.stride(-1) == 2
