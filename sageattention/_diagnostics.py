"""`python -m sageattention env` and `python -m sageattention check`."""
from __future__ import annotations

import math
import os
import platform
import sys
import time
from typing import Callable, List, Tuple

import torch

from . import _lib, _pv
from ._pv import PvMode
from ._backends import BACKEND_ENV, available_backends, get_backend
from ._backends.torch_quant import quantize_qk as ref_quantize_qk
from ._backends.torch_quant import quantize_v as ref_quantize_v
from ._backends.triton.capability import FP8_DOT_ENV
from ._recipes import SUPPORTED_RECIPES, resolve
from ._types import VQuantDType
from .core import sageattn

# docs/CONTRACT.md §5 bars against the quantize-dequantize fp32 reference.
BARS = {"cos": 0.997, "rel_l1": 0.04, "rmse": 0.02, "lse_cos": 0.999}


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    wanted = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vnni", "avx512_vnni",
                              "avx512_bf16", "avx_vnni", "amx_int8")
                    have = set(line.split(":", 1)[1].split())
                    return " ".join(f for f in wanted if f in have) or "none of interest"
    except OSError:
        pass
    return platform.machine()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# Every SAGEATTN_* environment variable the package reads, and its effect
# (tests/test_diagnostics.py checks this list against the sources).
ENV_VARS: Tuple[Tuple[str, str], ...] = (
    (BACKEND_ENV, "forces the backend of every call (cpu, musa, triton); unset, q's device picks it"),
    (_pv.ENV_VAR, "the CPU backend's 8-bit P·V mode when pv_quant_dtype is not passed: fp8 (default) or int8"),
    (_lib.ISA_ENV, "forces the CPU SIMD path (a name of 'isa available', or auto); read at the first call"),
    (_lib.LIBRARY_ENV, "path of a C++ core library to load before the installed one"),
    (FP8_DOT_ENV, "Triton backend: 1 / 0 forces fp8 operands into the P·V dot on / off; unset, a per-GPU table"),
)


def env_var_rows() -> List[Tuple[str, str]]:
    """One row a variable: its value (or unset) and what it does."""
    rows = []
    for name, effect in ENV_VARS:
        value = os.environ.get(name)
        shown = "(unset)" if value is None or value == "" else repr(value)
        rows.append((name, f"{shown:<9} {effect}"))
    return rows


def env_report() -> List[Tuple[str, str]]:
    from . import __version__

    import tvm_ffi

    rows = [
        ("sageattention", __version__),
        ("python", sys.version.split()[0]),
        ("torch", torch.__version__),
        ("apache-tvm-ffi", getattr(tvm_ffi, "__version__", "?")),
        ("platform", platform.platform()),
        ("cpu", _cpu_model()),
        ("cpu flags", _cpu_flags()),
        ("isa available", ", ".join(n for n in _lib.cpu_isa_names() if _lib.cpu_isa_available(n))),
        ("isa in use", _lib.cpu_isa()),
        ("threads", str(torch.get_num_threads())),
        ("backends", ", ".join(available_backends())),
        ("core library", getattr(_lib.module(), "__file__", None) or "loaded"),
    ]
    return rows + env_var_rows()


def _dequant_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, recipe, qk_dtype: str,
                       causal: bool, pv: VQuantDType) -> Tuple[torch.Tensor, torch.Tensor]:
    """fp32 attention on quantize-dequantized (B, N, H, D) inputs, V in `pv`'s codes."""
    r = resolve(recipe)
    qq = ref_quantize_qk(q, k, quant_recipe=r.recipe, qk_quant_dtype=qk_dtype, smooth_k=True)
    vq = ref_quantize_v(v, quant_recipe=r.recipe, dtype=pv)

    def deq(codes: torch.Tensor, scale: torch.Tensor, g) -> torch.Tensor:
        n = codes.shape[1]
        if g.per_tensor:
            return codes.float() * scale.reshape(())
        idx = torch.arange(n)
        gi = (idx // g.block) * g.groups + ((idx % g.block) // g.stride) % g.groups
        return codes.float() * scale[:, :, gi].permute(0, 2, 1)[..., None]

    qd = deq(qq.q_codes, qq.q_scale, r.q)
    kd = deq(qq.k_codes, qq.k_scale, r.k) + qq.k_mean[:, None]
    if r.v_per_channel:
        vd = vq.v_codes.float() * vq.v_scale[:, None]
    else:
        vd = deq(vq.v_codes, vq.v_scale, r.v)
    qh, kh, vh = (x.transpose(1, 2) for x in (qd, kd, vd))
    s = qh @ kh.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(s, -1) @ vh, torch.logsumexp(s, -1)


def _metrics(out: torch.Tensor, ref: torch.Tensor, lse: torch.Tensor, ref_lse: torch.Tensor) -> dict:
    o, r = out.float().flatten(), ref.float().flatten()
    return {
        "cos": torch.nn.functional.cosine_similarity(o, r, dim=0).item(),
        "rel_l1": ((o - r).abs().sum() / r.abs().sum()).item(),
        "rmse": (o - r).pow(2).mean().sqrt().item(),
        "lse_cos": torch.nn.functional.cosine_similarity(lse.flatten(), ref_lse.flatten(), dim=0).item(),
    }


def _pv_modes_to_check() -> List[VQuantDType]:
    """The 8-bit P·V modes of the backend that runs CPU tensors (SAGEATTN_BACKEND may pick another)."""
    backend = get_backend(torch.device("cpu"))
    modes = getattr(backend, "pv_modes", (PvMode.FP8,))
    return [m for m in ("fp8", "int8") if PvMode(m) in modes]


def _passes(m: dict) -> bool:
    return (m["cos"] > BARS["cos"] and m["rel_l1"] < BARS["rel_l1"] and m["rmse"] < BARS["rmse"]
            and m["lse_cos"] > BARS["lse_cos"])


def run_check(print_fn: Callable[[str], None] = print) -> bool:
    """Every recipe × Q·Kᵀ {int8, fp8} × causal or not × each 8-bit P·V mode the CPU
    backend runs (fp8, and int8: docs/CONTRACT.md §10.3), on the docs/CONTRACT.md §5 shape."""
    gen = torch.Generator().manual_seed(0)
    shape_q, shape_kv = (1, 2, 128, 128), (1, 2, 1024, 128)
    q = torch.randn(shape_q, generator=gen).bfloat16()
    k = torch.randn(shape_kv, generator=gen).bfloat16()
    v = torch.randn(shape_kv, generator=gen).bfloat16()
    print_fn(f"sageattention check on {_lib.cpu_isa()} ({torch.get_num_threads()} threads); "
             f"bars: cos>{BARS['cos']} relL1<{BARS['rel_l1']} rmse<{BARS['rmse']} lse_cos>{BARS['lse_cos']}")
    print_fn(f"{'recipe':<22}{'qk':<6}{'pv':<6}{'causal':<8}{'cos':>9}{'relL1':>9}{'rmse':>9}{'lse_cos':>10}"
             f"{'ms':>8}  result")
    ok_all = True
    for pv in _pv_modes_to_check():
        for recipe in SUPPORTED_RECIPES:
            for qk_dtype in ("int8", "fp8"):
                for causal in (False, True):
                    t0 = time.perf_counter()
                    out, lse = sageattn(q, k, v, is_causal=causal, return_lse=True, quant_recipe=recipe,
                                        qk_quant_dtype=qk_dtype, pv_quant_dtype=pv)
                    ms = (time.perf_counter() - t0) * 1e3
                    ref, ref_lse = _dequant_attention(*(x.transpose(1, 2) for x in (q, k, v)), recipe, qk_dtype,
                                                      causal, pv)
                    m = _metrics(out, ref, lse, ref_lse)
                    ok = _passes(m)
                    ok_all &= ok
                    print_fn(f"{str(recipe):<22}{qk_dtype:<6}{pv:<6}{str(causal):<8}{m['cos']:>9.5f}"
                             f"{m['rel_l1']:>9.4f}{m['rmse']:>9.4f}{m['lse_cos']:>10.6f}{ms:>8.1f}  "
                             f"{'ok' if ok else 'FAIL'}")
    print_fn("all recipes pass" if ok_all else "SOME RECIPES FAIL")
    return ok_all
