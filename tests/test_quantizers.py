"""Quantizers of the low-level API (sageattention.ops.quantize_qk / quantize_v).

Codes must be bitwise equal to the independent reference (tests/reference.py),
scales must have the documented shapes and equal values, the K mean is summed in
float64 and rounded once, and the fp8 e4m3fn encoder / decoder must agree with
``torch.Tensor.to(torch.float8_e4m3fn)`` (round-half-even, saturating) on every
code and on the rounding edges.
"""

from __future__ import annotations

import math

import pytest
import torch

import reference as ref
from reference import Recipe

import sageattention.ops as ops

RECIPE_IDS = list(ref.RECIPES)
RECIPE_VALUES = [ref.RECIPES[n] for n in RECIPE_IDS]
DTYPES = [torch.float16, torch.bfloat16]


def _nhd(B: int, N: int, H: int, D: int, dtype: torch.dtype, seed: int, **kw: float) -> torch.Tensor:
    return ref.randn((B, N, H, D), dtype=dtype, seed=seed, **kw)


def _expected_q_scale_shape(recipe: Recipe, B: int, H: int, N: int) -> tuple[int, int, int]:
    g = ref.q_grouping(recipe)
    return (1, 1, 1) if g is None else (B, H, ref.num_groups(N, g))


def _expected_k_scale_shape(recipe: Recipe, B: int, H: int, N: int) -> tuple[int, int, int]:
    g = ref.k_grouping(recipe)
    return (1, 1, 1) if g is None else (B, H, ref.num_groups(N, g))


def _expected_v_scale_shape(recipe: Recipe, B: int, H: int, N: int, Dv: int) -> tuple[int, int, int]:
    mode = ref.v_mode(recipe)
    if mode == "tensor":
        return (1, 1, 1)
    if mode == "channel":
        return (B, H, Dv)
    return (B, H, -(-N // 128))


def _assert_codes_equal(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    assert tuple(got.shape) == tuple(want.shape), f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    gb, wb = ref.code_bits(got), ref.code_bits(want)
    if not torch.equal(gb, wb):
        bad = (gb != wb).nonzero()
        idx = tuple(bad[0].tolist())
        raise AssertionError(
            f"{what}: {bad.shape[0]} of {gb.numel()} codes differ; first at {idx}: "
            f"got {int(gb[idx])} want {int(wb[idx])}"
        )


def _assert_scales_equal(got: torch.Tensor, want: torch.Tensor, what: str, groups: torch.Tensor | None = None) -> None:
    """Shape must match exactly; values must be bitwise equal (on the groups that
    hold tokens, when ``groups`` is given)."""
    assert got.dtype == torch.float32, f"{what}: dtype {got.dtype}"
    assert tuple(got.shape) == tuple(want.shape), f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    if groups is not None:
        got, want = got[..., groups], want[..., groups]
    if not torch.equal(got, want):
        diff = (got - want).abs()
        idx = tuple((diff == diff.max()).nonzero()[0].tolist())
        raise AssertionError(
            f"{what}: scales differ, worst at {idx}: got {got[idx].item()!r} want {want[idx].item()!r}"
        )


# --------------------------------------------------------------------------- #
# quantize_qk                                                                  #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("smooth_k", [True, False], ids=["smooth", "nosmooth"])
@pytest.mark.parametrize("qk_dtype", ["int8", "fp8"])
@pytest.mark.parametrize("recipe", RECIPE_VALUES, ids=RECIPE_IDS)
def test_quantize_qk_matches_reference(recipe: Recipe, qk_dtype: str, smooth_k: bool, dtype: torch.dtype) -> None:
    B, Nq, Nk, Hq, Hkv, D = 2, 200, 520, 4, 2, 64  # 520 = 4 * 128 + 8: a last block of 8 tokens
    shift = ref.randn((D,), dtype=torch.float32, seed=99) * 2.0  # channel bias: smoothing matters
    q = _nhd(B, Nq, Hq, D, dtype, seed=1)
    k = _nhd(B, Nk, Hkv, D, dtype, seed=2, shift=shift)  # type: ignore[arg-type]
    got = ops.quantize_qk(q, k, quant_recipe=recipe, qk_quant_dtype=qk_dtype, smooth_k=smooth_k)
    want = ref.quantize_qk_reference(q, k, recipe, qk_dtype, smooth_k)

    if smooth_k:
        assert got.k_mean is not None
        assert got.k_mean.dtype == torch.float32
        assert tuple(got.k_mean.shape) == (B, Hkv, D)
        assert torch.equal(got.k_mean, want.k_mean), "k_mean differs from float64-summed mean"
    else:
        assert got.k_mean is None

    kg = ref.k_grouping(recipe)
    _assert_scales_equal(got.q_scale, want.q_scale, "q_scale")
    assert tuple(got.q_scale.shape) == _expected_q_scale_shape(recipe, B, Hq, Nq)
    _assert_scales_equal(
        got.k_scale, want.k_scale, "k_scale", None if kg is None else ref.used_groups(Nk, kg)
    )
    assert tuple(got.k_scale.shape) == _expected_k_scale_shape(recipe, B, Hkv, Nk)
    _assert_codes_equal(got.q_codes, want.q_codes, "q_codes")
    _assert_codes_equal(got.k_codes, want.k_codes, "k_codes")
    assert got.q_codes.dtype == ref.CODE_DTYPE[qk_dtype]


@pytest.mark.parametrize("qk_dtype", ["int8", "fp8"])
@pytest.mark.parametrize("recipe", RECIPE_VALUES, ids=RECIPE_IDS)
def test_quantize_qk_strided_inputs(recipe: Recipe, qk_dtype: str) -> None:
    """HND tensors handed down as transposed views, and sliced tensors, quantize
    exactly like their contiguous copies."""
    B, Nq, Nk, Hq, Hkv, D = 1, 200, 150, 2, 1, 40
    q_hnd = ref.randn((B, Hq, Nq, D), dtype=torch.float16, seed=3)
    k_big = ref.randn((B, Nk * 2, Hkv, D + 24), dtype=torch.float16, seed=4)
    q = q_hnd.transpose(1, 2)  # (B, Nq, Hq, D), non-contiguous
    k = k_big[:, ::2, :, 5 : 5 + D]  # strided along N and sliced along D
    assert not q.is_contiguous() and not k.is_contiguous()
    got = ops.quantize_qk(q, k, quant_recipe=recipe, qk_quant_dtype=qk_dtype, smooth_k=True)
    want = ref.quantize_qk_reference(q, k, recipe, qk_dtype, True)
    assert torch.equal(got.k_mean, want.k_mean)
    _assert_scales_equal(got.q_scale, want.q_scale, "q_scale")
    kg = ref.k_grouping(recipe)
    _assert_scales_equal(got.k_scale, want.k_scale, "k_scale", None if kg is None else ref.used_groups(Nk, kg))
    _assert_codes_equal(got.q_codes, want.q_codes, "q_codes")
    _assert_codes_equal(got.k_codes, want.k_codes, "k_codes")


@pytest.mark.parametrize(
    "token, expect_group",
    [(0, 0), (7, 0), (8, 1), (15, 1), (56, 7), (63, 7), (64, 0), (72, 1), (127, 7), (128, 8), (200, 9), (255, 15)],
)
def test_per_thread_k_group_of_token(token: int, expect_group: int) -> None:
    """A spike in one K token must raise exactly the scale of its group
    g(n) = (n // 128) * 8 + ((n % 128) // 8) % 8 (and no other group)."""
    B, N, H, D = 1, 256, 1, 16
    k = torch.full((B, N, H, D), 0.5, dtype=torch.float16)
    k[0, token, 0, 3] = 64.0
    q = torch.ones((B, 1, H, D), dtype=torch.float16)
    got = ops.quantize_qk(q, k, quant_recipe=ref.PER_THREAD, qk_quant_dtype="int8", smooth_k=False)
    assert tuple(got.k_scale.shape) == (1, 1, 16)
    spike = torch.tensor(64.0) / 127.0
    flat = got.k_scale.flatten()
    assert torch.nonzero(flat == spike).flatten().tolist() == [expect_group]
    assert ref.group_index(N, (128, 8, 8))[token].item() == expect_group


@pytest.mark.parametrize("recipe", RECIPE_VALUES, ids=RECIPE_IDS)
def test_q_group_of_token(recipe: Recipe) -> None:
    B, N, H, D = 2, 300, 2, 8
    q = torch.full((B, N, H, D), 0.25, dtype=torch.bfloat16)
    q[1, 130, 1, 0] = -8.0  # block 1 of batch 1, head 1
    k = torch.ones((B, 4, H, D), dtype=torch.bfloat16)
    got = ops.quantize_qk(q, k, quant_recipe=recipe, qk_quant_dtype="int8", smooth_k=False)
    expect = torch.full(_expected_q_scale_shape(recipe, B, H, N), 0.25) / 127.0
    if ref.q_grouping(recipe) is None:
        expect.fill_(8.0 / 127.0)
    else:
        expect[1, 1, 1] = torch.tensor(8.0) / 127.0
    assert torch.equal(got.q_scale, expect)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
def test_k_mean_is_float64_sum_rounded_once(dtype: torch.dtype) -> None:
    """Large cancelling values plus many small ones: a float32 running sum loses
    the small ones; the float64 sum (then one rounding) does not."""
    B, N, H, D = 1, 1000, 2, 4
    big = 60000.0 if dtype == torch.float16 else 2.0**20
    k = torch.full((B, N, H, D), 2.0**-10, dtype=dtype)
    k[:, 1:-1, :, 1] = ref.randn((B, N - 2, H), dtype=dtype, seed=5)
    k[:, 0] = big  # first ...
    k[:, -1] = -big  # ... and last: a sequential float32 sum drops the small ones
    q = torch.ones((B, 3, H, D), dtype=dtype)
    got = ops.quantize_qk(q, k, quant_recipe=ref.PER_THREAD, qk_quant_dtype="int8", smooth_k=True)
    want = ref.k_mean_reference(k)
    assert torch.equal(got.k_mean, want), (got.k_mean, want)
    # Sanity of the test itself: the float32 sequential sum is different.
    f32 = torch.zeros(B, H, D, dtype=torch.float32)
    for n in range(N):
        f32 += k[:, n].float()
    assert not torch.equal(f32 / N, want)


def test_quantize_qk_gqa_shapes() -> None:
    B, Nq, Nk, Hq, Hkv, D = 1, 129, 257, 8, 1, 72
    q = _nhd(B, Nq, Hq, D, torch.bfloat16, seed=6)
    k = _nhd(B, Nk, Hkv, D, torch.bfloat16, seed=7)
    got = ops.quantize_qk(q, k)  # default recipe (128,16,-1,1), int8, smooth_k
    want = ref.quantize_qk_reference(q, k, ref.PER_THREAD, "int8", True)
    assert got.q_codes.dtype == torch.int8 and got.k_codes.dtype == torch.int8
    assert tuple(got.q_scale.shape) == (B, Hq, 2)
    assert tuple(got.k_scale.shape) == (B, Hkv, 24)
    assert tuple(got.k_mean.shape) == (B, Hkv, D)
    _assert_codes_equal(got.q_codes, want.q_codes, "q_codes")
    _assert_codes_equal(got.k_codes, want.k_codes, "k_codes")


def test_int8_round_half_even_and_saturation() -> None:
    """Per-tensor scale forced to exactly 1.0 (amax = 127): codes are RNE(x),
    ties to even, saturated at +-127."""
    cases = [
        (127.0, 127), (-127.0, -127), (0.5, 0), (-0.5, 0), (1.5, 2), (-1.5, -2), (2.5, 2), (-2.5, -2),
        (3.5, 4), (126.5, 126), (-126.5, -126), (99.5, 100), (100.5, 100), (0.0, 0), (-0.0, 0),
        (126.75, 127), (0.25, 0), (0.75, 1), (-0.75, -1),
    ]
    x = torch.tensor([c[0] for c in cases], dtype=torch.float16)  # all exact in fp16
    assert x.float().tolist() == [c[0] for c in cases]
    expect = [c[1] for c in cases]
    q = x.reshape(1, -1, 1, 1)
    k = x.flip(0).reshape(1, -1, 1, 1).contiguous()
    got = ops.quantize_qk(q, k, quant_recipe=ref.PER_TENSOR, qk_quant_dtype="int8", smooth_k=False)
    assert got.q_scale.flatten().tolist() == [1.0]
    assert got.k_scale.flatten().tolist() == [1.0]
    assert got.q_codes.flatten().to(torch.int64).tolist() == expect
    assert got.k_codes.flatten().to(torch.int64).tolist() == expect[::-1]


def test_int8_scale_two() -> None:
    """amax = 254 gives scale exactly 2.0; x = 2 * (n + 0.5) ties go to even."""
    vals = [254.0] + [2.0 * (n + 0.5) for n in range(-20, 20)] + [-254.0, 253.0]
    x = torch.tensor(vals, dtype=torch.float16)
    q = x.reshape(1, -1, 1, 1)
    got = ops.quantize_qk(q, q, quant_recipe=ref.PER_TENSOR, qk_quant_dtype="int8", smooth_k=False)
    assert got.q_scale.flatten().tolist() == [2.0]
    expect = [max(-127, min(127, round(v / 2.0))) for v in vals]  # Python round() is half-even
    assert got.q_codes.flatten().to(torch.int64).tolist() == expect
    assert got.k_codes.flatten().to(torch.int64).tolist() == expect


# --------------------------------------------------------------------------- #
# quantize_v                                                                   #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("v_dtype", ["fp8", "int8"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("Nk", [77, 1000])
@pytest.mark.parametrize("recipe", RECIPE_VALUES, ids=RECIPE_IDS)
def test_quantize_v_matches_reference(recipe: Recipe, Nk: int, dtype: torch.dtype, v_dtype: str) -> None:
    B, H, Dv = 2, 2, 96
    v = _nhd(B, Nk, H, Dv, dtype, seed=8, scale=3.0)
    got = ops.quantize_v(v, quant_recipe=recipe, dtype=v_dtype)
    want = ref.quantize_v_reference(v, recipe, v_dtype)
    assert got.v_codes.dtype == ref.CODE_DTYPE[v_dtype]
    assert tuple(got.v_scale.shape) == _expected_v_scale_shape(recipe, B, H, Nk, Dv)
    _assert_scales_equal(got.v_scale, want.v_scale, "v_scale")
    _assert_codes_equal(got.v_codes, want.v_codes, "v_codes")


def test_quantize_v_strided_and_default_recipe() -> None:
    B, H, Nk, Dv = 1, 2, 130, 64
    v_hnd = ref.randn((B, H, Nk, Dv), dtype=torch.bfloat16, seed=9)
    v = v_hnd.transpose(1, 2)
    got = ops.quantize_v(v)  # default recipe: per channel
    want = ref.quantize_v_reference(v, ref.PER_THREAD)
    assert tuple(got.v_scale.shape) == (B, H, Dv)
    _assert_scales_equal(got.v_scale, want.v_scale, "v_scale")
    _assert_codes_equal(got.v_codes, want.v_codes, "v_codes")


def test_quantize_v_int8_rounds_half_even_and_saturates() -> None:
    """Per-channel int8 V: scale = amax / 127 exactly when amax is 127·2^k, so x / scale is
    exact and the codes show the rounding (ties to even) and the ±127 range directly."""
    ys = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5, 3.25, -3.75, 127.0, -127.0, 0.0]
    col = torch.tensor(ys, dtype=torch.float32) * 0.25  # channel 0: scale 0.25
    other = torch.tensor([127.0 * 8] + [1.0] * (len(ys) - 1))  # channel 1: scale 8
    v = torch.stack([col, other], dim=-1).to(torch.float16).reshape(1, len(ys), 1, 2)
    assert torch.equal(v.float().reshape(-1, 2)[:, 0], col), "test values must be exact in fp16"
    got = ops.quantize_v(v, dtype="int8")
    assert got.v_scale.flatten().tolist() == [0.25, 8.0]
    assert got.v_codes[0, :, 0, 0].tolist() == [0, 2, 2, 0, -2, -2, 126, -126, 3, -4, 127, -127, 0]
    assert got.v_codes[0, :, 0, 1].tolist() == [127] + [0] * (len(ys) - 1)  # 1/8 rounds to 0


@pytest.mark.parametrize("bad", ["int4", "FP8", "", None, 8, b"int8"])
def test_quantize_v_dtype_must_be_ours(bad: object) -> None:
    v = _nhd(1, 8, 1, 8, torch.bfloat16, seed=1)
    with pytest.raises(ValueError, match=r"\bdtype\b.*'fp8' or 'int8'"):
        ops.quantize_v(v, dtype=bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- #
# fp8 e4m3fn encoder / decoder                                                 #
# --------------------------------------------------------------------------- #


def _finite_fp8_values() -> list[float]:
    return [ref.fp8_e4m3fn_decode(c) for c in range(256) if c not in (0x7F, 0xFF)]


def _encode_through_quantize_v(values: list[float], scale_pow2: int = 0) -> torch.Tensor:
    """Encode ``values`` with the package's fp8 encoder at scale exactly 2**scale_pow2.

    A per-tensor recipe and one extra element equal to 448 * 2**scale_pow2 make
    the V scale max(amax, 1e-12) / 448 exactly 2**scale_pow2, so every other
    element is encoded as fp8(x / 2**scale_pow2). Returns the raw bytes (int64)
    of the codes for ``values`` (the anchor element is dropped)."""
    s = 2.0**scale_pow2
    xs = [448.0 * s] + [v * s for v in values]
    x = torch.tensor(xs, dtype=torch.float32)
    x16 = x.to(torch.float16)
    assert torch.equal(x16.float(), x), "test values must be exact in fp16"
    v = x16.reshape(1, -1, 1, 1)
    got = ops.quantize_v(v, quant_recipe=ref.PER_TENSOR)
    assert got.v_scale.flatten().tolist() == [s]
    assert got.v_codes.dtype == torch.float8_e4m3fn
    return ref.fp8_bits(got.v_codes.flatten())[1:]


def _torch_fp8_saturating(x: torch.Tensor) -> torch.Tensor:
    """torch's float8_e4m3fn cast with the contract's saturation (docs/CONTRACT.md §2.2)
    made explicit: older torch (2.5 among them) casts finite values beyond ±448 and ±inf
    to NaN instead of ±448. NaN stays NaN through the clamp."""
    return x.clamp(-448.0, 448.0).to(torch.float8_e4m3fn)


def test_fp8_reference_codec_self_check() -> None:
    """The reference's two fp8 codecs (torch's .to() and the pure-Python one)
    agree on every code and on the saturation / rounding edges, including the
    ones no package path can reach with finite inputs (|x| > 448, inf, NaN)."""
    table = ref.all_fp8_values()
    torch_decoded = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
    assert torch.equal(torch.isnan(table), torch.isnan(torch_decoded))
    fin = ~torch.isnan(table)
    assert torch.equal(table[fin], torch_decoded[fin])
    assert int(torch.isnan(table).sum()) == 2
    edges = [448.0, 449.0, 464.0, 464.0001, 479.0, 480.0, 1e9, float("inf"), -float("inf"), -464.0, -500.0,
             float("nan"), 2.0**-9, 2.0**-10, 2.0**-10 * 1.0001, 3 * 2.0**-10, 2.0**-11, 0.0, -0.0,
             432.0, 424.0, 440.0, 0.5 + 2**-5, 1.0 + 2**-4, 1.0 + 3 * 2**-4, 2.0**-6 + 2**-10]
    expect = {448.0: 0x7E, 464.0: 0x7E, float("inf"): 0x7E, -float("inf"): 0xFE, 1e9: 0x7E,
              2.0**-9: 0x01, 2.0**-10: 0x00, 3 * 2.0**-10: 0x02, 2.0**-11: 0x00,
              432.0: 0x7E, 424.0: 0x7D, 1.0 + 2**-4: 0x38, 1.0 + 3 * 2**-4: 0x3A}
    for x in edges:
        t = _torch_fp8_saturating(torch.tensor([x], dtype=torch.float32))
        tb = int(ref.fp8_bits(t)[0])
        if math.isnan(x):
            assert tb & 0x7F == 0x7F
            continue
        assert ref.fp8_e4m3fn_encode(x) == tb, (x, ref.fp8_e4m3fn_encode(x), tb)
        if x in expect and x != 0.0:
            assert tb == expect[x], (x, tb, expect[x])
        if x == 0.0:
            assert tb == (0x80 if math.copysign(1.0, x) < 0 else 0x00)


@pytest.mark.parametrize("scale_pow2", [0, 3, -4])
def test_fp8_encoder_all_finite_codes_round_trip(scale_pow2: int) -> None:
    """Every finite e4m3fn value (both zeros included) encodes to its own code."""
    values = _finite_fp8_values()
    got = _encode_through_quantize_v(values, scale_pow2)
    want = [c for c in range(256) if c not in (0x7F, 0xFF)]
    bad = [(hex(w), hex(int(g)), values[i]) for i, (g, w) in enumerate(zip(got.tolist(), want)) if g != w]
    assert not bad, f"{len(bad)} codes do not round-trip, e.g. (want, got, value) {bad[:8]}"


def _rounding_edge_values() -> list[float]:
    """Midpoints between consecutive fp8 magnitudes (ties, must go to even), the
    nearest fp16 neighbours of each midpoint, and the subnormal edges."""
    mags = sorted({abs(v) for v in _finite_fp8_values()})
    out: list[float] = []
    for a, b in zip(mags[:-1], mags[1:]):
        mid = (a + b) / 2.0
        m16 = torch.tensor([mid], dtype=torch.float16)
        up = float(torch.nextafter(m16, torch.tensor([float("inf")], dtype=torch.float16)))
        dn = float(torch.nextafter(m16, torch.tensor([0.0], dtype=torch.float16)))
        out += [mid, up, dn, -mid, -up, -dn]
    out += [2.0**-9, 2.0**-10, 3 * 2.0**-10, 2.0**-11, 2.0**-12, 2.0**-14, 5 * 2.0**-11, -(2.0**-10), 440.0, 436.0, 447.0]
    return out


def test_fp8_encoder_rounding_edges() -> None:
    values = _rounding_edge_values()
    got = _encode_through_quantize_v(values)
    want_torch = ref.fp8_bits(_torch_fp8_saturating(torch.tensor(values, dtype=torch.float32)))
    want_py = torch.tensor([ref.fp8_e4m3fn_encode(v) for v in values], dtype=torch.int64)
    assert torch.equal(want_torch, want_py)  # reference self-consistency
    bad = [(v, hex(int(g)), hex(int(w))) for v, g, w in zip(values, got.tolist(), want_torch.tolist()) if g != w]
    assert not bad, f"{len(bad)} edge values mis-encoded, e.g. (value, got, want) {bad[:8]}"


def test_fp8_encoder_specific_ties() -> None:
    # value -> expected byte (RNE, ties to even mantissa)
    cases = {
        2.0**-10: 0x00,  # half of the smallest subnormal: tie -> 0
        3 * 2.0**-10: 0x02,  # 1.5 * 2^-9: tie between 0x01 and 0x02 -> 0x02
        5 * 2.0**-10: 0x02,  # 2.5 * 2^-9: tie -> 0x02
        2.0**-9: 0x01,
        1.0 + 2.0**-4: 0x38,  # 1.0625: tie between 1.0 (0x38) and 1.125 (0x39) -> 0x38
        1.0 + 3 * 2.0**-4: 0x3A,  # 1.1875: tie between 1.125 and 1.25 -> 1.25
        432.0: 0x7E,  # tie between 416 and 448 -> 448 (even)
        -432.0: 0xFE,
        424.0: 0x7D,  # nearer to 416
        -0.0: 0x80,
    }
    got = _encode_through_quantize_v(list(cases))
    assert [hex(int(g)) for g in got.tolist()] == [hex(b) for b in cases.values()]


def test_fp8_scale_division_is_true_division() -> None:
    """x / scale must be a true float32 division (not a multiply by a rounded
    reciprocal): check codes against torch on data with a non-power-of-two scale."""
    v = ref.randn((3, 500, 2, 64), dtype=torch.float16, seed=11, scale=7.0)
    got = ops.quantize_v(v, quant_recipe=ref.PER_TENSOR)
    want = ref.quantize_v_reference(v, ref.PER_TENSOR)
    _assert_scales_equal(got.v_scale, want.v_scale, "v_scale")
    _assert_codes_equal(got.v_codes, want.v_codes, "v_codes")


# --------------------------------------------------------------------------- #
# property test over shapes                                                    #
# --------------------------------------------------------------------------- #

try:
    from hypothesis import given
    from hypothesis import strategies as st

    HAVE_HYPOTHESIS = True
except ImportError:  # pragma: no cover
    HAVE_HYPOTHESIS = False


if HAVE_HYPOTHESIS:

    @given(
        B=st.integers(1, 2),
        Nq=st.integers(1, 300),
        Nk=st.integers(1, 300),
        Hkv=st.integers(1, 2),
        rep=st.sampled_from([1, 2]),
        D=st.sampled_from([1, 8, 40, 64, 72, 96, 128]),
        recipe=st.sampled_from(RECIPE_VALUES),
        qk_dtype=st.sampled_from(["int8", "fp8"]),
        smooth_k=st.booleans(),
        seed=st.integers(0, 2**16),
    )
    def test_quantize_property(
        B: int, Nq: int, Nk: int, Hkv: int, rep: int, D: int, recipe: Recipe, qk_dtype: str, smooth_k: bool, seed: int
    ) -> None:
        Hq = Hkv * rep
        q = _nhd(B, Nq, Hq, D, torch.bfloat16, seed=seed)
        k = _nhd(B, Nk, Hkv, D, torch.bfloat16, seed=seed + 1, scale=2.0, shift=0.5)
        v = _nhd(B, Nk, Hkv, D, torch.bfloat16, seed=seed + 2)
        got = ops.quantize_qk(q, k, quant_recipe=recipe, qk_quant_dtype=qk_dtype, smooth_k=smooth_k)
        want = ref.quantize_qk_reference(q, k, recipe, qk_dtype, smooth_k)
        qg, kg = ref.q_grouping(recipe), ref.k_grouping(recipe)
        assert tuple(got.q_scale.shape) == _expected_q_scale_shape(recipe, B, Hq, Nq)
        assert tuple(got.k_scale.shape) == _expected_k_scale_shape(recipe, B, Hkv, Nk)
        _assert_scales_equal(got.q_scale, want.q_scale, "q_scale", None if qg is None else ref.used_groups(Nq, qg))
        _assert_scales_equal(got.k_scale, want.k_scale, "k_scale", None if kg is None else ref.used_groups(Nk, kg))
        _assert_codes_equal(got.q_codes, want.q_codes, "q_codes")
        _assert_codes_equal(got.k_codes, want.k_codes, "k_codes")
        if smooth_k:
            assert torch.equal(got.k_mean, want.k_mean)
        for v_dtype in ("fp8", "int8"):
            gv = ops.quantize_v(v, quant_recipe=recipe, dtype=v_dtype)
            wv = ref.quantize_v_reference(v, recipe, v_dtype)
            assert tuple(gv.v_scale.shape) == _expected_v_scale_shape(recipe, B, Hkv, Nk, D)
            _assert_scales_equal(gv.v_scale, wv.v_scale, f"v_scale {v_dtype}")
            _assert_codes_equal(gv.v_codes, wv.v_codes, f"v_codes {v_dtype}")


# --------------------------------------------------------------------------- #
# portable torch quantizers (used by the MUSA backend) agree bit for bit       #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("qk_dtype", ["int8", "fp8"])
@pytest.mark.parametrize("recipe", RECIPE_VALUES, ids=RECIPE_IDS)
def test_torch_quantizers_match_reference(recipe: Recipe, qk_dtype: str) -> None:
    """The MUSA backend quantizes with torch ops (sageattention._backends.torch_quant);
    on CPU they must produce the same codes and scales as the reference (and so
    as the C++ quantizers checked above). Internal module: skipped if absent."""
    try:
        from sageattention._backends import torch_quant
        from sageattention._recipes import normalize_recipe
    except ImportError:  # pragma: no cover
        pytest.fail("sageattention._backends.torch_quant is missing")
    B, Nq, Nk, Hq, Hkv, D = 2, 200, 520, 4, 2, 64
    q = _nhd(B, Nq, Hq, D, torch.bfloat16, seed=21)
    k = _nhd(B, Nk, Hkv, D, torch.bfloat16, seed=22, shift=0.75)
    v = _nhd(B, Nk, Hkv, D, torch.bfloat16, seed=23)
    r = normalize_recipe(recipe)
    # (pure torch ops: run them single-threaded like the reference, for speed)
    got = ref.single_threaded(torch_quant.quantize_qk)(q, k, quant_recipe=r, qk_quant_dtype=qk_dtype, smooth_k=True)
    want = ref.quantize_qk_reference(q, k, recipe, qk_dtype, True)
    assert torch.equal(got.k_mean, want.k_mean)
    kg = ref.k_grouping(recipe)
    _assert_scales_equal(got.q_scale, want.q_scale, "q_scale")
    _assert_scales_equal(got.k_scale, want.k_scale, "k_scale", None if kg is None else ref.used_groups(Nk, kg))
    _assert_codes_equal(got.q_codes, want.q_codes, "q_codes")
    _assert_codes_equal(got.k_codes, want.k_codes, "k_codes")
    gv = ref.single_threaded(torch_quant.quantize_v)(v, quant_recipe=r)
    wv = ref.quantize_v_reference(v, recipe)
    _assert_scales_equal(gv.v_scale, wv.v_scale, "v_scale")
    _assert_codes_equal(gv.v_codes, wv.v_codes, "v_codes")
