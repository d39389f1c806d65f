"""`python -m sageattention bench` works and prints its table; the shipped library
carries no benchmark probes.

Nothing here is timed: speed belongs to the benchmark's output, not to tests. The CLI
runs in a tiny mode (H=1, N=64 and 128, D=32) in a child process, exactly as a user
would start it.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import sageattention._lib as _lib

TINY = ["--quick", "--heads", "1", "--seq-len", "64", "128", "--head-dim", "32"]


def _run_cli(*args: str, threads: str = "1") -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": threads}
    return subprocess.run([sys.executable, "-m", "sageattention", "bench", *args], capture_output=True,
                          text=True, timeout=300, env=env, check=False)


def test_bench_cli_prints_the_table() -> None:
    proc = _run_cli(*TINY, "--threads", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert f"ISA path: {_lib.cpu_isa()}, threads: 1" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("shape"))
    for column in ("ours TOPS", "bf16 TOPS", "fp32 TOPS", "x bf16", "x fp32", "cos ours"):
        assert column in lines[header]
    rows = [line.split() for line in lines[header + 2:header + 4]]
    assert [r[:2] for r in rows] == [["N=64", "D=32"], ["N=128", "D=32"]]
    for r in rows:
        numbers = [float(x) for x in r[2:]]
        assert all(x > 0 for x in numbers[:9]), r  # times, TOPS and speed-ups
        cos_ours = numbers[9]
        assert 0.99 < cos_ours <= 1.0 + 1e-9, r  # the recipe's accuracy, not a random output


@pytest.mark.parametrize("args, named", [
    (["--seq-len", "0"], "--seq-len"),
    (["--heads", "-2"], "--heads"),
    (["--threads", "x"], "--threads"),
    (["--quick", "--heads", "1", "--seq-len", "64", "--head-dim", "300"], "--head-dim"),
])
def test_bench_cli_rejects_bad_options_by_name(args: list, named: str) -> None:
    proc = _run_cli(*args)
    assert proc.returncode != 0
    assert named in proc.stderr
    assert "Traceback" not in proc.stderr


def test_shipped_library_has_no_peak_probes() -> None:
    """The instruction-throughput probes live in bench/probe/, built only by the benchmark."""
    module = _lib.module()
    path = next(p for p in _lib._candidates() if os.path.exists(p))
    with open(path, "rb") as fh:
        image = fh.read()
    for symbol in (b"measure_peak_gops", b"peak_probe_kinds", b"peak_probe_supported", b"sageattn_probe"):
        assert symbol not in image, f"{symbol!r} found in {path}"
    assert module is not None
