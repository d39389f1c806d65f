"""Scale (hardening, issue 5 item 8): O(N) extra memory and 64-bit index arithmetic.

- Extra memory: the peak resident set during a call, minus what it had before and minus
  the output, stays far below an Nq x Nk score matrix (flash-style tiling). Measured by
  resetting the kernel's RSS high-water mark (``/proc/self/clear_refs`` = 5) right before
  the call and reading ``VmHWM`` after it. The N = 131072 run is slow (minutes; set
  SAGEATTN_SLOW_TESTS=1) and runs in a child process; a small N runs always.
- 64-bit offsets: q/k/v (and int8 codes through the low-level API) are views whose
  element offsets exceed 2^31 (and byte offsets 2^32) over a storage that is reserved,
  not touched: Linux commits only the pages written, so a 4 GiB ``torch.empty`` costs a
  few pages of RAM. Results must equal the contiguous copies bitwise.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import sageattention
from sageattention import _lib, ops, sageattn

SLOW = pytest.mark.skipif(os.environ.get("SAGEATTN_SLOW_TESTS") != "1", reason="slow: set SAGEATTN_SLOW_TESTS=1")
MiB = 1 << 20
BIG = 2 ** 31 + 64  # an element stride past int32


def _status(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# Runs as `python -c` in a child: prints one JSON line.
_CHILD = r"""
import json, sys, time, torch
from sageattention import sageattn
N, causal, threads = int(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3])
torch.set_num_threads(threads)
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
g = torch.Generator().manual_seed(0)
q, k, v = (torch.randn((1, 1, N, 64), generator=g).to(torch.bfloat16) for _ in range(3))
sageattn(q[:, :, :256], k[:, :, :256], v[:, :, :256], is_causal=causal)  # load the library, start the pool
rss = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
t = time.perf_counter()
out = sageattn(q, k, v, is_causal=causal)
dt = time.perf_counter() - t
hwm = status("VmHWM")
print(json.dumps(dict(N=N, seconds=dt, rss_before=rss, hwm=hwm, extra=hwm - rss - out.numel() * 2,
                      inputs=3 * q.numel() * 2, finite=bool(torch.isfinite(out).all()))))
"""


def _child_peak(n: int, causal: bool, timeout: float) -> dict:
    if not _reset_hwm():
        pytest.skip("no /proc/self/clear_refs: cannot reset the RSS high-water mark")
    threads = max(1, min(os.cpu_count() or 1, 16))
    p = subprocess.run([sys.executable, "-c", _CHILD, str(n), "1" if causal else "0", str(threads)],
                       check=False, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    print(f"\nN={r['N']}: {r['seconds']:.1f} s, peak extra {r['extra'] / MiB:.1f} MiB "
          f"(inputs {r['inputs'] / MiB:.0f} MiB, output {n * 128 / MiB:.0f} MiB)")
    return r


@SLOW
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
def test_n_131072_peak_extra_memory_under_64mib(causal: bool) -> None:
    """B=1, H=1, N=131072, D=64: completes, finite, and the peak extra memory stays under
    64 MiB (an fp32 N x N score matrix would be 64 GiB). About 20 s (causal) / 40 s (full)
    on 2 AVX2 cores; the scalar path is ~20x slower."""
    r = _child_peak(131072, causal, timeout=3 * 3600)
    assert r["finite"]
    assert r["extra"] < 64 * MiB, r


def test_small_n_peak_extra_memory_is_linear() -> None:
    """N = 4096 in this process: the peak extra memory stays under 16 MiB, where an fp32
    Nq x Nk score matrix alone would take 64 MiB."""
    n = 4096
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn((1, 1, n, 32), generator=g).to(torch.bfloat16) for _ in range(3))
    sageattn(q[:, :, :128], k[:, :, :128], v[:, :, :128])
    rss = _status("VmRSS")
    if rss is None or not _reset_hwm():
        pytest.skip("cannot measure the RSS high-water mark here")
    out = sageattn(q, k, v)
    hwm = _status("VmHWM")
    assert hwm is not None
    extra = hwm - rss - out.numel() * out.element_size()
    assert extra < 16 * MiB, f"peak extra {extra / MiB:.1f} MiB"


# --------------------------------------------------------------------------- #
# 64-bit offsets                                                               #
# --------------------------------------------------------------------------- #


def _reserve(numel: int, dtype: torch.dtype) -> torch.Tensor:
    try:
        return torch.empty(numel, dtype=dtype)
    except (RuntimeError, MemoryError) as e:  # no overcommit or too little address space
        pytest.skip(f"cannot reserve {numel} elements of {dtype}: {e}")


def _fill(view: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    view.copy_(torch.randn(view.shape, generator=g).to(view.dtype))
    return view


@pytest.fixture()
def rss_guard():
    before = _status("VmRSS")
    yield
    after = _status("VmRSS")
    if before is not None and after is not None:  # only touched pages were committed
        assert after - before < 512 * MiB, f"RSS grew by {(after - before) / MiB:.0f} MiB"


# (shape NHD, strides) with one dim whose stride is past 2^31 elements (2^32 bytes in bf16)
HUGE_VIEWS = {
    "tokens": ((1, 2, 1, 64), (0, BIG, 64, 1)),
    "batch": ((2, 3, 1, 64), (BIG, 64, 192, 1)),
    "heads": ((1, 3, 2, 64), (0, 64, BIG, 1)),
}


@pytest.mark.parametrize("dim", list(HUGE_VIEWS))
def test_public_api_offsets_beyond_2_pow_31(dim: str, rss_guard: None) -> None:
    shape, strides = HUGE_VIEWS[dim]
    base = _reserve(BIG + 1024, torch.bfloat16)  # 4 GiB of address space, a few pages touched
    q = _fill(base.as_strided(shape, strides, 0), 1)
    k = _fill(base.as_strided(shape, strides, 256), 2)
    v = _fill(base.as_strided(shape, strides, 512), 3)
    for recipe in [(128, 16, -1, 1), (-1, -1, -1, -1)]:
        got = sageattn(q, k, v, tensor_layout="NHD", return_lse=True, quant_recipe=recipe)
        want = sageattn(q.contiguous(), k.contiguous(), v.contiguous(), tensor_layout="NHD", return_lse=True,
                        quant_recipe=recipe)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert bool(torch.isfinite(got[0]).all())
    del q, k, v, base


def test_low_level_codes_offsets_beyond_2_pow_32(rss_guard: None) -> None:
    """int8 / fp8 codes written by the quantizer through a view with element (= byte)
    offsets past 2^32, then read by attention_forward: same bits as contiguous buffers."""
    M = _lib.module()
    stride = 2 ** 31 + 128
    shape, strides = (1, 3, 2, 64), (0, stride, 64, 1)  # last token at 2^32 + 256 bytes
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(shape, generator=g).to(torch.bfloat16) for _ in range(3))
    codes = _reserve(2 * stride + 1024, torch.int8)
    qc = codes.as_strided(shape, strides, 0)
    kc = codes.as_strided(shape, strides, 256)
    vc = codes.as_strided(shape, strides, 512).view(torch.float8_e4m3fn)
    qs, ks, vs, km = torch.empty(1, 2, 1), torch.empty(1, 2, 8), torch.empty(1, 2, 64), torch.empty(1, 2, 64)
    M.quantize_tokens(q, qc, qs, 128, 1, 128, False, False, None, 2)
    M.channel_mean(k, km, 2)
    M.quantize_tokens(k, kc, ks, 128, 8, 8, False, False, km, 2)
    M.quantize_channels(v, vc, vs, True, 2)
    ref = ops.quantize_qk(q, k), ops.quantize_v(v)
    assert torch.equal(qc, ref[0].q_codes) and torch.equal(kc, ref[0].k_codes)
    assert torch.equal(vc.view(torch.uint8), ref[1].v_codes.view(torch.uint8))
    got = ops.attention_quantized(qc, kc, vc, qs, ks, vs, None, return_lse=True, k_mean=km)
    want = ops.attention_quantized(ref[0].q_codes, ref[0].k_codes, ref[1].v_codes, ref[0].q_scale, ref[0].k_scale,
                                   ref[1].v_scale, None, return_lse=True, k_mean=ref[0].k_mean)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    del qc, kc, vc, codes


def test_half_pv_offsets_beyond_2_pow_31(rss_guard: None) -> None:
    """The 16-bit P·V path reads V (bf16) itself: byte offsets past 2^32."""
    base = _reserve(BIG + 1024, torch.bfloat16)
    shape, strides = HUGE_VIEWS["tokens"]
    q = _fill(base.as_strided(shape, strides, 0), 5)
    k = _fill(base.as_strided(shape, strides, 256), 6)
    v = _fill(base.as_strided(shape, strides, 512), 7)
    got = sageattention.sageattn_qk_int8_pv_fp16_cuda(q, k, v, tensor_layout="NHD")
    want = sageattention.sageattn_qk_int8_pv_fp16_cuda(q.contiguous(), k.contiguous(), v.contiguous(),
                                                       tensor_layout="NHD")
    assert torch.equal(got, want)
    del q, k, v, base


def _largest_view_offset(shape: tuple[int, ...], strides: tuple[int, ...]) -> int:
    return sum((s - 1) * st for s, st in zip(shape, strides))


def test_views_really_exceed_int32() -> None:
    for shape, strides in HUGE_VIEWS.values():
        assert _largest_view_offset(shape, strides) > 2 ** 31
