"""Independent fp32 reference for the sageattention contract.

This module deliberately does NOT import ``sageattention``. It re-derives, from
docs/CONTRACT.md and docs/DESIGN.md, with plain torch ops:

* the recipe -> scale-group mapping,
* quantize / dequantize of Q, K (int8 or fp8 e4m3fn) and V (fp8 e4m3fn),
* K smoothing (mean summed in float64, rounded once to float32),
* exact attention (float32) on the dequantized operands, with the LSE
  of the ORIGINAL K (smoothing correction added back),
* the FP8 output encoding,
* an independent (pure Python) e4m3fn decoder / encoder used to cross-check
  ``torch.Tensor.to(torch.float8_e4m3fn)``,
* the accuracy metrics of docs/CONTRACT.md §5.

Internal axis order is (B, N, H, D) ("NHD"), as in the low-level API.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch

Recipe = tuple[int, int, int, int]
Grouping = tuple[int, int, int]  # (block, groups, stride); block == -1: whole axis

PER_TENSOR: Recipe = (-1, -1, -1, -1)
PER_BLOCK: Recipe = (128, 128, -1, 1)
PER_THREAD: Recipe = (128, 16, -1, 1)
PER_BLOCK_V: Recipe = (128, 128, -1, 128)
DEFAULT_RECIPE: Recipe = PER_THREAD

RECIPES: dict[str, Recipe] = {
    "per_tensor": PER_TENSOR,
    "per_block": PER_BLOCK,
    "per_thread": PER_THREAD,
    "per_block_v": PER_BLOCK_V,
}

QMAX: dict[str, float] = {"int8": 127.0, "fp8": 448.0}
FP8_MAX: float = 448.0
SCALE_FLOOR: float = 1e-12

CODE_DTYPE: dict[str, torch.dtype] = {"int8": torch.int8, "fp8": torch.float8_e4m3fn}


F = TypeVar("F", bound=Callable[..., Any])


def single_threaded(fn: F) -> F:
    """Run a reference computation with one torch intra-op thread.

    The package sizes its own thread pool from ``torch.get_num_threads()``, so the
    suite leaves that setting alone; but on a small (2-core) CI machine the
    reference's many small torch ops are far faster single-threaded (no OpenMP
    spin-waiting against the package's worker threads)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        prev = torch.get_num_threads()
        if prev == 1:
            return fn(*args, **kwargs)
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(prev)

    return wrapper  # type: ignore[return-value]


# --------------------------------------------------------------------------- #
# Recipes and scale groups                                                      #
# --------------------------------------------------------------------------- #

# Token groupings per operand (DESIGN.md table). None means one scale for the
# whole tensor (every batch and head), shape (1, 1, 1).
_Q_GROUPING: dict[Recipe, Grouping | None] = {
    PER_TENSOR: None,
    PER_BLOCK: (128, 1, 128),
    PER_THREAD: (128, 1, 128),
    PER_BLOCK_V: (128, 1, 128),
}
_K_GROUPING: dict[Recipe, Grouping | None] = {
    PER_TENSOR: None,
    PER_BLOCK: (128, 1, 128),
    PER_THREAD: (128, 8, 8),
    PER_BLOCK_V: (128, 1, 128),
}
# V: "tensor", "channel" (per channel over all Nk) or "block128" (per 128 tokens,
# all channels).
_V_MODE: dict[Recipe, str] = {
    PER_TENSOR: "tensor",
    PER_BLOCK: "channel",
    PER_THREAD: "channel",
    PER_BLOCK_V: "block128",
}


def q_grouping(recipe: Recipe) -> Grouping | None:
    return _Q_GROUPING[tuple(recipe)]  # type: ignore[index]


def k_grouping(recipe: Recipe) -> Grouping | None:
    return _K_GROUPING[tuple(recipe)]  # type: ignore[index]


def v_mode(recipe: Recipe) -> str:
    return _V_MODE[tuple(recipe)]  # type: ignore[index]


def group_index(n_tokens: int, grouping: Grouping) -> torch.Tensor:
    """g(n) = (n // block) * groups + ((n % block) // stride) % groups, as int64."""
    block, groups, stride = grouping
    if block == -1:
        block = max(n_tokens, 1)
    n = torch.arange(n_tokens, dtype=torch.int64)
    return (n // block) * groups + ((n % block) // stride) % groups


def num_groups(n_tokens: int, grouping: Grouping) -> int:
    """Number of scale groups along N: ceil(N / block) * groups."""
    block, groups, _ = grouping
    if block == -1:
        return groups if n_tokens > 0 else 0
    return -(-n_tokens // block) * groups


def used_groups(n_tokens: int, grouping: Grouping) -> torch.Tensor:
    """Sorted unique group ids that actually contain at least one token."""
    return torch.unique(group_index(n_tokens, grouping))


# --------------------------------------------------------------------------- #
# Quantize / dequantize                                                         #
# --------------------------------------------------------------------------- #


def scale_from_amax(amax: torch.Tensor, qmax: float) -> torch.Tensor:
    """max(amax, 1e-12) / QMAX in float32 (a true float32 division)."""
    amax = amax.to(torch.float32)
    return torch.clamp_min(amax, SCALE_FLOOR) / torch.tensor(qmax, dtype=torch.float32)


def encode(x_over_scale: torch.Tensor, qk_dtype: str) -> torch.Tensor:
    """Round-half-even, saturate to +-QMAX; returns int8 or float8_e4m3fn codes."""
    x = x_over_scale.to(torch.float32)
    if qk_dtype == "int8":
        return torch.round(x).clamp(-127.0, 127.0).to(torch.int8)
    if qk_dtype == "fp8":
        return x.clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    raise ValueError(qk_dtype)


def quantize_tokens(
    x: torch.Tensor, grouping: Grouping | None, qk_dtype: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize a (B, N, H, D) float32 tensor with one scale per token group.

    Returns (codes (B, N, H, D), scale (B, H, G)); grouping None: scale (1, 1, 1).
    """
    x = x.to(torch.float32)
    B, N, H, D = x.shape
    qmax = QMAX[qk_dtype]
    if grouping is None:
        amax = x.abs().amax() if x.numel() else torch.tensor(0.0)
        scale = scale_from_amax(amax, qmax).reshape(1, 1, 1)
        codes = encode(x / scale.reshape(1, 1, 1, 1), qk_dtype)
        return codes, scale
    G = num_groups(N, grouping)
    g = group_index(N, grouping)
    tok_amax = x.abs().amax(dim=-1).permute(0, 2, 1) if D else x.new_zeros(B, H, N)  # (B,H,N)
    amax = torch.zeros(B, H, G, dtype=torch.float32)
    amax.scatter_reduce_(2, g.expand(B, H, N), tok_amax, reduce="amax", include_self=True)
    scale = scale_from_amax(amax, qmax)  # (B, H, G)
    per_tok = scale[:, :, g].permute(0, 2, 1).unsqueeze(-1)  # (B, N, H, 1)
    codes = encode(x / per_tok, qk_dtype)
    return codes, scale


def dequantize_tokens(
    codes: torch.Tensor, scale: torch.Tensor, grouping: Grouping | None
) -> torch.Tensor:
    """Inverse of quantize_tokens (float32, (B, N, H, D))."""
    c = codes.to(torch.float32)
    if grouping is None:
        return c * scale.reshape(1, 1, 1, 1)
    N = codes.shape[1]
    g = group_index(N, grouping)
    return c * scale[:, :, g].permute(0, 2, 1).unsqueeze(-1)


@single_threaded
def k_mean_reference(k: torch.Tensor) -> torch.Tensor:
    """Per-(b, kv head, channel) mean over Nk: summed in float64, rounded once to
    float32. k is (B, N, H, D); returns (B, H, D)."""
    n = k.shape[1]
    s = k.to(torch.float64).sum(dim=1)
    return (s / n).to(torch.float32)


@dataclass
class RefQK:
    q_codes: torch.Tensor  # (B, Nq, Hq, D)
    q_scale: torch.Tensor  # (B, Hq, Gq) or (1, 1, 1)
    k_codes: torch.Tensor  # (B, Nk, Hkv, D)
    k_scale: torch.Tensor  # (B, Hkv, Gk) or (1, 1, 1)
    k_mean: torch.Tensor | None  # (B, Hkv, D)


@dataclass
class RefV:
    v_codes: torch.Tensor  # (B, Nk, Hkv, Dv) float8_e4m3fn (int8 for the int8 P·V mode)
    v_scale: torch.Tensor  # (B, Hkv, Dv) | (B, Hkv, ceil(Nk/128)) | (1, 1, 1)


@single_threaded
def quantize_qk_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    recipe: Recipe = DEFAULT_RECIPE,
    qk_dtype: str = "int8",
    smooth_k: bool = True,
) -> RefQK:
    """q (B, Nq, Hq, D), k (B, Nk, Hkv, D), any float dtype."""
    recipe = tuple(recipe)  # type: ignore[assignment]
    qf = q.to(torch.float32)
    kf = k.to(torch.float32)
    k_mean: torch.Tensor | None = None
    if smooth_k:
        k_mean = k_mean_reference(k)
        kf = kf - k_mean.unsqueeze(1)  # float32 subtraction
    q_codes, q_scale = quantize_tokens(qf, q_grouping(recipe), qk_dtype)
    k_codes, k_scale = quantize_tokens(kf, k_grouping(recipe), qk_dtype)
    return RefQK(q_codes, q_scale, k_codes, k_scale, k_mean)


@single_threaded
def quantize_v_reference(v: torch.Tensor, recipe: Recipe = DEFAULT_RECIPE, v_dtype: str = "fp8") -> RefV:
    """v (B, Nk, Hkv, Dv) -> fp8 e4m3fn codes (or int8 codes, the int8 P·V mode's V,
    with ``v_dtype="int8"``) and float32 scales."""
    vf = v.to(torch.float32)
    B, N, H, D = vf.shape
    mode = v_mode(tuple(recipe))  # type: ignore[arg-type]
    if mode == "tensor":
        codes, scale = quantize_tokens(vf, None, v_dtype)
        return RefV(codes, scale)
    if mode == "channel":
        amax = vf.abs().amax(dim=1) if N else vf.new_zeros(B, H, D)  # (B, H, D)
        scale = scale_from_amax(amax, QMAX[v_dtype])
        codes = encode(vf / scale.unsqueeze(1), v_dtype)
        return RefV(codes, scale)
    if mode == "block128":
        codes, scale = quantize_tokens(vf, (128, 1, 128), v_dtype)
        return RefV(codes, scale)
    raise AssertionError(mode)


def dequantize_v(codes: torch.Tensor, scale: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    mode = v_mode(tuple(recipe))  # type: ignore[arg-type]
    c = codes.to(torch.float32)
    if mode == "tensor":
        return c * scale.reshape(1, 1, 1, 1)
    if mode == "channel":
        return c * scale.unsqueeze(1)
    return dequantize_tokens(codes, scale, (128, 1, 128))


# --------------------------------------------------------------------------- #
# Attention                                                                     #
# --------------------------------------------------------------------------- #


def to_nhd(x: torch.Tensor, tensor_layout: str) -> torch.Tensor:
    return x.transpose(1, 2) if tensor_layout == "HND" else x


def from_nhd(x: torch.Tensor, tensor_layout: str) -> torch.Tensor:
    return x.transpose(1, 2) if tensor_layout == "HND" else x


@single_threaded
def exact_attention_nhd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    sm_scale: float,
    is_causal: bool = False,
    quantize_p: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact attention in float32 on (B, N, H, D) tensors with GQA.

    Returns (out (B, Nq, Hq, Dv) float32, lse (B, Hq, Nq) float32, natural log).
    Query head h reads kv head h // (Hq // Hkv). Rows with no visible key:
    output 0 and LSE -inf. ``quantize_p`` only mimics the fp8 P of the kernel
    (with the global row max) for self-checks of the accuracy bars.
    """
    B, Nq, Hq, D = q.shape
    Nk, Hkv = k.shape[1], k.shape[2]
    Dv = v.shape[3]
    rep = Hq // Hkv
    qf = q.to(torch.float32).permute(0, 2, 1, 3).reshape(B, Hkv, rep * Nq, D)  # heads grouped per kv head
    kf = k.to(torch.float32).permute(0, 2, 1, 3)  # (B, Hkv, Nk, D)
    vf = v.to(torch.float32).permute(0, 2, 1, 3)
    s = torch.matmul(qf, kf.transpose(-1, -2)).reshape(B, Hq, Nq, Nk) * sm_scale
    if is_causal:
        mask = torch.ones(Nq, Nk, dtype=torch.bool).tril()
        s = s.masked_fill(~mask, float("-inf"))
    if Nk == 0:
        return q.new_zeros((B, Nq, Hq, Dv), dtype=torch.float32), s.new_full((B, Hq, Nq), float("-inf"))
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m)
    denom = p.sum(dim=-1, keepdim=True)
    lse = (m + torch.log(denom)).squeeze(-1)  # -inf for rows with no visible key
    if quantize_p:
        p = (p * 448.0).to(torch.float8_e4m3fn).to(torch.float32) / 448.0
    pv = torch.matmul(p.reshape(B, Hkv, rep * Nq, Nk), vf).reshape(B, Hq, Nq, Dv)
    out = torch.where(denom > 0, pv / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.zeros_like(pv))
    return out.permute(0, 2, 1, 3).contiguous(), lse


@dataclass
class RefResult:
    out: torch.Tensor  # float32, caller's layout
    lse: torch.Tensor  # float32, (B, Hq, Nq)
    q_hat: torch.Tensor  # dequantized operands, NHD float32
    k_hat: torch.Tensor
    v_hat: torch.Tensor


@single_threaded
def reference_sageattn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tensor_layout: str = "HND",
    is_causal: bool = False,
    sm_scale: float | None = None,
    recipe: Recipe = DEFAULT_RECIPE,
    qk_dtype: str = "int8",
    smooth_k: bool = True,
    quantize_p: bool = False,
    v_dtype: str = "fp8",
) -> RefResult:
    """Quantize-dequantize by the recipe, then exact attention (docs/CONTRACT.md §3).
    ``v_dtype="int8"``: V quantized as in the int8 P·V mode."""
    qn, kn, vn = to_nhd(q, tensor_layout), to_nhd(k, tensor_layout), to_nhd(v, tensor_layout)
    D = qn.shape[-1]
    if sm_scale is None:
        sm_scale = 1.0 / math.sqrt(D)
    rq = quantize_qk_reference(qn, kn, recipe, qk_dtype, smooth_k)
    rv = quantize_v_reference(vn, recipe, v_dtype)
    q_hat = dequantize_tokens(rq.q_codes, rq.q_scale, q_grouping(recipe))
    k_hat = dequantize_tokens(rq.k_codes, rq.k_scale, k_grouping(recipe))
    v_hat = dequantize_v(rv.v_codes, rv.v_scale, recipe)
    out, lse = exact_attention_nhd(q_hat, k_hat, v_hat, sm_scale, is_causal, quantize_p)
    if smooth_k and rq.k_mean is not None and kn.shape[1] > 0:
        Hq, Hkv = qn.shape[2], kn.shape[2]
        mean = rq.k_mean if Hq == Hkv else rq.k_mean.repeat_interleave(Hq // Hkv, dim=1)  # (B, Hq, D)
        corr = torch.einsum("bnhd,bhd->bhn", q_hat, mean) * sm_scale
        lse = lse + corr
    return RefResult(from_nhd(out, tensor_layout), lse, q_hat, k_hat, v_hat)


INT8_PV_TILE = 128  # keys per tile: the int8 P·V mode's P scale is per row and per tile
LOG2E = 1.4426950408889634


@single_threaded
def int8_pv_attention_nhd(
    q_hat: torch.Tensor,
    k_hat: torch.Tensor,
    v_codes: torch.Tensor,
    v_scale: torch.Tensor,
    recipe: Recipe,
    sm_scale: float,
    is_causal: bool = False,
    tile: int = INT8_PV_TILE,
) -> torch.Tensor:
    """The int8 P·V mode's arithmetic, written out independently (docs/DESIGN.md, P·V modes):
    a flash loop over key tiles with the running row max m (log2 units); per tile
    p = 2^(s - m) (float64 here), pmax = max over the tile's keys, P codes
    round_half_even(p · 255 / pmax), and o = o·alpha + (codes · v_codes) · pmax/255
    (· V's scale when it is per token block); l sums the unrounded p. At the end
    out = o / l (· V's per-channel scale). Rows with no visible key give 0.

    q_hat, k_hat: dequantized (B, N, H, D); v_codes int8 (B, Nk, Hkv, Dv) with the
    recipe's V scale. Returns float32 (B, Nq, Hq, Dv)."""
    B, Nq, Hq, D = q_hat.shape
    Nk, Hkv, Dv = k_hat.shape[1], k_hat.shape[2], v_codes.shape[3]
    rep = Hq // Hkv
    qf = q_hat.double().permute(0, 2, 1, 3)  # (B, Hq, Nq, D)
    kf = k_hat.double().permute(0, 2, 1, 3).repeat_interleave(rep, dim=1)  # (B, Hq, Nk, D)
    vc = v_codes.double().permute(0, 2, 1, 3).repeat_interleave(rep, dim=1)  # (B, Hq, Nk, Dv)
    s = torch.matmul(qf, kf.transpose(-1, -2)) * (sm_scale * LOG2E)
    if is_causal:
        s = s.masked_fill(~torch.ones(Nq, Nk, dtype=torch.bool).tril(), float("-inf"))
    mode = v_mode(tuple(recipe))  # type: ignore[arg-type]
    if mode == "tensor":
        tok_scale = v_scale.double().reshape(1, 1, 1).expand(B, Hkv, Nk)
    elif mode == "block128":
        tok_scale = v_scale.double()[:, :, torch.arange(Nk) // 128]
    else:
        tok_scale = torch.ones(B, Hkv, Nk, dtype=torch.float64)
    tok_scale = tok_scale.repeat_interleave(rep, dim=1)  # (B, Hq, Nk)
    m = torch.full((B, Hq, Nq, 1), float("-inf"), dtype=torch.float64)
    l = torch.zeros((B, Hq, Nq, 1), dtype=torch.float64)
    o = torch.zeros((B, Hq, Nq, Dv), dtype=torch.float64)
    for j0 in range(0, Nk, tile):
        st = s[..., j0:j0 + tile]
        m_new = torch.maximum(m, st.amax(dim=-1, keepdim=True))
        seen = torch.isfinite(m_new)
        alpha = torch.where(seen, torch.exp2(m - m_new), torch.ones_like(m))
        p = torch.where(seen, torch.exp2(st - m_new), torch.zeros_like(st))
        pmax = p.amax(dim=-1, keepdim=True)
        codes = torch.where(pmax > 0, torch.round(p * (255.0 / pmax.clamp_min(1e-300))), torch.zeros_like(p))
        ts = tok_scale[..., j0:j0 + tile][:, :, None, :1]  # one V scale per tile (block128 ⊃ tile)
        o = o * alpha + torch.matmul(codes, vc[:, :, j0:j0 + tile]) * (pmax / 255.0) * ts
        l = l * alpha + p.sum(dim=-1, keepdim=True)
        m = m_new
    out = torch.where(l > 0, o / torch.where(l > 0, l, torch.ones_like(l)), torch.zeros_like(o))
    if mode == "channel":
        out = out * v_scale.double().repeat_interleave(rep, dim=1)[:, :, None, :]
    return out.permute(0, 2, 1, 3).float().contiguous()


@single_threaded
def unquantized_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    tensor_layout: str = "HND",
    is_causal: bool = False,
    sm_scale: float | None = None,
) -> torch.Tensor:
    """torch SDPA in float32 on the unquantized inputs (top-left causal mask)."""
    qh = to_nhd(q, tensor_layout).transpose(1, 2).float()
    kh = to_nhd(k, tensor_layout).transpose(1, 2).float()
    vh = to_nhd(v, tensor_layout).transpose(1, 2).float()
    rep = qh.shape[1] // kh.shape[1]
    if rep > 1:
        kh = kh.repeat_interleave(rep, dim=1)
        vh = vh.repeat_interleave(rep, dim=1)
    out = torch.nn.functional.scaled_dot_product_attention(
        qh, kh, vh, is_causal=is_causal, scale=sm_scale
    )  # (B, H, N, D)
    return out if tensor_layout == "HND" else out.transpose(1, 2)


@single_threaded
def fp8_output_reference(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """out_scale = max(amax over Dv, 1e-12) / 448 per row; out_fp8 = RNE(out/scale)."""
    o = out.to(torch.float32)
    scale = scale_from_amax(o.abs().amax(dim=-1, keepdim=True), FP8_MAX)
    return encode(o / scale, "fp8"), scale


# --------------------------------------------------------------------------- #
# Independent fp8 e4m3fn codec (pure Python)                                    #
# --------------------------------------------------------------------------- #


def fp8_e4m3fn_decode(code: int) -> float:
    """Value of an e4m3fn byte: bias 7, no inf, NaN only at S.1111.111."""
    sign = -1.0 if code & 0x80 else 1.0
    exp = (code >> 3) & 0xF
    man = code & 0x7
    if exp == 0xF and man == 0x7:
        return float("nan")
    if exp == 0:
        return sign * man * 2.0**-9  # subnormal: man/8 * 2^-6
    return sign * (1.0 + man / 8.0) * 2.0 ** (exp - 7)


def fp8_e4m3fn_encode(x: float) -> int:
    """Round-half-even, saturating (+-448, also for +-inf), NaN -> 0x7F/0xFF."""
    if math.isnan(x):
        return 0xFF if math.copysign(1.0, x) < 0 else 0x7F
    sign = 0x80 if math.copysign(1.0, x) < 0 else 0x00
    a = abs(x)
    if a >= 448.0:
        return sign | 0x7E
    # candidate magnitudes, ascending; choose nearest, ties to even code
    best_code = 0
    best_err = a
    for c in range(0x7F):  # 0x00 .. 0x7E
        val = fp8_e4m3fn_decode(c)
        err = abs(a - val)
        if err < best_err or (err == best_err and (c & 1) == 0 and (best_code & 1) == 1):
            best_code, best_err = c, err
    return sign | best_code


def all_fp8_values() -> torch.Tensor:
    """float32 tensor of the 256 decoded e4m3fn codes (NaN for 0x7F, 0xFF)."""
    return torch.tensor([fp8_e4m3fn_decode(c) for c in range(256)], dtype=torch.float32)


def fp8_bits(x: torch.Tensor) -> torch.Tensor:
    """Raw bytes of a float8_e4m3fn tensor as int64 (for bitwise comparisons)."""
    assert x.dtype == torch.float8_e4m3fn
    return x.view(torch.uint8).to(torch.int64)


def code_bits(x: torch.Tensor) -> torch.Tensor:
    """Bitwise view of int8 / fp8 codes as int64."""
    if x.dtype == torch.float8_e4m3fn:
        return fp8_bits(x)
    assert x.dtype == torch.int8, x.dtype
    return x.to(torch.int64)


# --------------------------------------------------------------------------- #
# Metrics (docs/CONTRACT.md §5)                                                     #
# --------------------------------------------------------------------------- #


@single_threaded
def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a64 = a.detach().to(torch.float64).flatten()
    b64 = b.detach().to(torch.float64).flatten()
    den = a64.norm() * b64.norm()
    if den == 0:
        return 1.0 if torch.equal(a64, b64) else 0.0
    return float((a64 @ b64) / den)


@single_threaded
def rel_l1(a: torch.Tensor, b: torch.Tensor) -> float:
    """sum|a - b| / sum|b| (b is the reference)."""
    a64 = a.detach().to(torch.float64)
    b64 = b.detach().to(torch.float64)
    return float((a64 - b64).abs().sum() / b64.abs().sum().clamp_min(1e-30))


@single_threaded
def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    a64 = a.detach().to(torch.float64)
    b64 = b.detach().to(torch.float64)
    return float(((a64 - b64) ** 2).mean().sqrt())


@single_threaded
def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() == 0:
        return 0.0
    return float((a.detach().to(torch.float64) - b.detach().to(torch.float64)).abs().max())


def layout_shape(B: int, H: int, N: int, D: int, tensor_layout: str) -> tuple[int, int, int, int]:
    """Shape of a q/k/v/out tensor in the public layout."""
    return (B, H, N, D) if tensor_layout == "HND" else (B, N, H, D)


def randn(
    shape: tuple[int, ...],
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
    scale: float = 1.0,
    shift: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """Deterministic randn (float32 generator, then cast)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float32) * scale + shift
    return x.to(dtype)
