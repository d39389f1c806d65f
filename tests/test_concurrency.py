"""Concurrency (hardening, issue 5 item 6).

- 8 Python threads call sageattn at once on different inputs (recipes, dtypes, layouts,
  causal, masks, fp8 output, varlen); every result is bitwise the sequential result.
  With 2 core threads per call, the callers also contend for the core's persistent
  worker pool: one caller gets it, the others fall back to threads of their own
  (csrc/core/thread_pool.cc), which must not change any bit.
- The GIL is released during compute (TVM-FFI drops it around every call): two threads
  each running a ~0.2 s single-threaded call overlap in wall time, so together they take
  clearly less than twice one call.

Shared state reviewed (SECURITY.md "Thread safety"): the worker pool (a try-locked busy
mutex; job hand-off under one mutex), the ISA override (an atomic, environment read once
under a mutex), nothing else mutable at namespace scope in the core.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

import pytest
import torch

import sageattention
import sageattention as sa
from sageattention import sageattn

BF16 = torch.bfloat16


def _randn(shape: tuple[int, ...], seed: int, dtype: torch.dtype = BF16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype)


def _jobs() -> list[Callable[[], Any]]:
    jobs: list[Callable[[], Any]] = []
    recipes = [(128, 16, -1, 1), (128, 128, -1, 1), (128, 128, -1, 128), (-1, -1, -1, -1)]
    for i in range(8):
        dtype = BF16 if i % 2 == 0 else torch.float16
        hq, hkv = [(4, 2), (2, 2), (6, 3), (4, 1)][i % 4]
        q = _randn((1, hq, 150 + 40 * i, 64), 10 * i + 1, dtype)
        k = _randn((1, hkv, 170 + 30 * i, 64), 10 * i + 2, dtype)
        v = _randn((1, hkv, 170 + 30 * i, 64), 10 * i + 3, dtype)
        kw: dict[str, Any] = {"quant_recipe": recipes[i % 4], "qk_quant_dtype": "fp8" if i % 3 == 0 else "int8",
                                  "return_lse": True}
        if i % 4 == 1:
            kw["attn_mask"] = _randn((q.shape[2], k.shape[2]), 99, torch.float32) > -0.5
        else:
            kw["is_causal"] = i % 2 == 0
        if i == 5:
            kw["fp8_output"] = True
        jobs.append(lambda q=q, k=k, v=v, kw=kw: sageattn(q, k, v, **kw))
    # two more shapes of work: the NHD layout and varlen (Python loop over sequences)
    qn, kn, vn = (_randn((2, 200, 4, 32), 80 + j) for j in range(3))
    jobs.append(lambda: sageattn(qn, kn, vn, tensor_layout="NHD", is_causal=True))
    cu = torch.tensor([0, 60, 61, 200], dtype=torch.int32)
    jobs.append(lambda: sa.sageattn_varlen(qn[0], kn[0], vn[0], cu, cu, 139, 139, is_causal=True))
    return jobs


def _bytes(res: Any) -> list[torch.Tensor]:
    parts = res if isinstance(res, tuple) else (res,)
    return [p.contiguous().view(torch.uint8) for p in parts]


def _same(a: Any, b: Any) -> bool:
    return all(torch.equal(x, y) for x, y in zip(_bytes(a), _bytes(b)))


def _run_threads(fns: list[Callable[[], Any]], repeat: int = 1) -> tuple[list[Any], list[BaseException]]:
    results: list[Any] = [None] * len(fns)
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(fns))

    def worker(i: int) -> None:
        try:
            barrier.wait()
            for _ in range(repeat):
                r = fns[i]()
                if results[i] is not None and not _same(results[i], r):
                    raise AssertionError(f"job {i}: two runs in the same thread differ")
                results[i] = r
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return results, errors


@pytest.fixture()
def torch_threads():
    saved = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(saved)


@pytest.mark.parametrize("core_threads", [1, 2])
def test_parallel_callers_bitwise_equal_sequential(torch_threads: Any, core_threads: int) -> None:
    torch_threads(core_threads)
    jobs = _jobs()
    sequential = [fn() for fn in jobs]
    results, errors = _run_threads(jobs, repeat=2)
    assert not errors, errors[0]
    for i, (a, b) in enumerate(zip(sequential, results)):
        assert _same(a, b), f"job {i} differs from its sequential result"


def test_parallel_callers_same_input(torch_threads: Any) -> None:
    """8 threads on the SAME read-only tensors (shared inputs are never written)."""
    torch_threads(2)
    q, k, v = (_randn((1, 4, 300, 64), s) for s in (1, 2, 3))
    before = [x.clone() for x in (q, k, v)]
    want = sageattn(q, k, v, is_causal=True, return_lse=True)
    results, errors = _run_threads([lambda: sageattn(q, k, v, is_causal=True, return_lse=True)] * 8, repeat=2)
    assert not errors, errors[0]
    assert all(_same(want, r) for r in results)
    assert all(torch.equal(a, b) for a, b in zip(before, (q, k, v)))


def _calibrated_inputs() -> tuple[tuple[torch.Tensor, ...], float]:
    """Inputs for which one single-threaded call takes ~0.2 s or more on this machine."""
    n = 512
    while True:
        q, k, v = (_randn((1, 4, n, 64), s) for s in (1, 2, 3))
        sageattn(q, k, v)
        t = time.perf_counter()
        sageattn(q, k, v)
        dt = time.perf_counter() - t
        if dt >= 0.2 or n >= 8192:
            return (q, k, v), dt
        n *= 2


def test_gil_released_python_thread_progresses(torch_threads: Any) -> None:
    """Load-independent proof that the GIL is released: while one thread is inside a long
    sageattn call, another thread keeps running Python bytecode. (Were the GIL held by
    the C++ call, the counting thread could not run at all until the call returned.)"""
    torch_threads(1)
    (q, k, v), single = _calibrated_inputs()
    inside = threading.Event()
    done = threading.Event()
    counts: dict[str, int] = {}

    def compute() -> None:
        inside.set()
        sageattn(q, k, v)
        done.set()

    def count() -> None:
        inside.wait()
        n = 0
        while not done.is_set():
            n += 1
        counts["during"] = n

    t_count = threading.Thread(target=count)
    t_comp = threading.Thread(target=compute)
    t_count.start()
    t_comp.start()
    t_comp.join()
    t_count.join()
    # calibrate: how far the same loop gets in a fraction of that time on its own
    end = time.perf_counter() + 0.05 * single
    solo = 0
    while time.perf_counter() < end:
        solo += 1
    assert counts["during"] > solo, (counts, solo)


def _parallel_ratio(call: Callable[[], Any], attempts: int = 5) -> float:
    """Best (over a few attempts) wall time of two calls in two threads, divided by two
    calls in a row: ~0.5 with two free cores and the GIL released, ~1.0 otherwise."""
    best = float("inf")
    for _attempt in range(attempts):
        t = time.perf_counter()
        call()
        call()
        sequential = time.perf_counter() - t
        t = time.perf_counter()
        _results, errors = _run_threads([call, call])
        parallel = time.perf_counter() - t
        assert not errors, errors[0]
        best = min(best, parallel / sequential)
        if best < 0.75:
            break
    return best


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores to show overlap")
def test_gil_released_two_threads_overlap(torch_threads: Any) -> None:
    """Two single-threaded calls in two Python threads take clearly less than twice one
    call (< 1.7x, i.e. < 0.85 of the sequential time). Wall time needs a free second
    core: when torch's own GIL-free matmul does not speed up either (another process owns
    a core), the measurement is skipped; the test above proves the release regardless."""
    torch_threads(1)  # one core thread per call: any speed-up comes from the two callers
    (q, k, v), _ = _calibrated_inputs()
    a = torch.randn(768, 768)
    for _attempt in range(3):  # a passing burst of load elsewhere must not fail the test
        ratio = _parallel_ratio(lambda: sageattn(q, k, v))
        if ratio < 0.85:
            return
        reference = _parallel_ratio(lambda: [a @ a for _ in range(8)])
        if reference >= 0.85:
            pytest.skip(f"no free second core: torch matmul in 2 threads = {reference:.2f}, sageattn = {ratio:.2f}")
    assert ratio < 0.85, (f"two threads took {ratio:.2f} of the sequential time (torch matmul: {reference:.2f}): "
                          "the GIL is not released?")


_FORK_CHILD = r"""
import os, signal, sys, torch
from sageattention import sageattn
torch.set_num_threads(2)
g = torch.Generator().manual_seed(0)
q, k, v = (torch.randn((1, 4, 512, 64), generator=g).to(torch.bfloat16) for _ in range(3))
want = sageattn(q, k, v)  # the core's worker pool now has a helper thread
pid = os.fork()
if pid == 0:
    signal.alarm(int(sys.argv[1]))  # a hang ends as SIGALRM
    got = sageattn(q, k, v)
    # Compare with numpy: torch's own OpenMP pool is not fork-safe (torch.equal would hang).
    same = got.view(torch.int16).numpy().tobytes() == want.view(torch.int16).numpy().tobytes()
    os._exit(0 if same else 3)
_, status = os.waitpid(pid, 0)
print("signal" if os.WIFSIGNALED(status) else "exit", os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork") or (os.cpu_count() or 1) < 1, reason="needs os.fork")
def test_call_in_forked_child_after_pool_started() -> None:
    """After the pool has started, a process forked from this one (multiprocessing's
    default on Linux) can still run multi-threaded calls: same result, no hang."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", _FORK_CHILD, "5"], check=False, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split() == ["exit", "0"], p.stdout


def _is_mixed_ok(r: Any, expected: list[Any]) -> bool:
    """A switch between the quantizer and the attention call of one sageattn may mix two
    paths: accept any result within the agreement of the paths themselves."""
    out = r[0].float()
    ref = expected[0][0].float()
    spread = max(float((e[0].float() - ref).abs().max()) for e in expected)
    return float((out - ref).abs().max()) <= 2 * spread + 1e-2
