"""Runs a battery of cases in child processes, so that a crash or a hang of the library
shows up as one failed case instead of killing pytest. A test module defines
CASES = {name: (fn, expected_exception_name_or_None, message_regex)}, calls
run_cases_in_subprocess(its own path, names) from a fixture, and ends with
`if __name__ == "__main__": child_main(CASES, sys.argv[1:])`.
"""
from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
from typing import Any


def _run_one(cases: dict[str, Any], name: str) -> dict[str, Any]:
    try:
        cases[name][0]()
        return {"name": name, "exc": None, "msg": ""}
    except BaseException as e:  # noqa: BLE001
        return {"name": name, "exc": type(e).__name__, "msg": str(e)[:4000]}


def _child(cases: dict[str, Any], names: list[str]) -> None:
    for name in names:
        print("@@" + json.dumps(_run_one(cases, name)), flush=True)


def _fork_child(cases: dict[str, Any], names: list[str]) -> None:
    """Cases known to crash: the library is loaded once, then each case runs in a fork of
    this process (no second torch import), and its fate is reported here. Nothing has
    run before the forks, so no helper thread exists that a fork would lose."""
    import sageattention._lib as lib

    lib.module()
    for name in names:
        pid = os.fork()
        if pid == 0:
            # die at once on a fault: TVM-FFI's SIGSEGV handler symbolises a backtrace (seconds)
            for sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGFPE, signal.SIGILL):
                signal.signal(sig, signal.SIG_DFL)
            print("@@" + json.dumps(_run_one(cases, name)), flush=True)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
            sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
            print("@@" + json.dumps({"name": name, "exc": "CRASH", "msg": f"signal {sig}, status {status}"}), flush=True)


def _spawn(script: str, args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=os.path.dirname(os.path.abspath(__file__)))


def _collect(proc: subprocess.Popen, names: list[str], results: dict[str, dict[str, Any]], timeout: float) -> list[str]:
    """Parse one child's '@@{json}' lines; return the names it did not report, the first of
    them recorded as CRASH / HANG (the child died or hung on it)."""
    try:
        out, err = proc.communicate(timeout=timeout)
        status = "CRASH" if proc.returncode != 0 else ""
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        status = "HANG"
    for line in out.splitlines():
        if line.startswith("@@"):
            r = json.loads(line[2:])
            results.setdefault(r["name"], r)
    remaining = [n for n in names if n not in results]
    if remaining:
        bad = remaining.pop(0)
        results[bad] = {"name": bad, "exc": status or "CRASH", "msg": f"rc={proc.returncode}\n{err[-3000:]}"}
    return remaining


def run_cases_in_subprocess(script: str, names: list[str], isolated: tuple[str, ...] = (),
                            timeout: float = 300.0) -> dict[str, dict[str, Any]]:
    """Run the cases in a child process (`python script NAME...`) and parse its results;
    after an unexpected crash the child restarts after the case that crashed. Cases in
    `isolated` (known to crash) run in a second child, one fork each, alongside."""
    results: dict[str, dict[str, Any]] = {}
    alone = [n for n in names if n in isolated]
    remaining = [n for n in names if n not in isolated]
    side = _spawn(script, ["--fork", *alone]) if alone else None
    while remaining:
        remaining = _collect(_spawn(script, remaining), remaining, results, timeout)
    while side is not None:
        alone = _collect(side, alone, results, timeout)
        side = _spawn(script, ["--fork", *alone]) if alone else None
    return results


def child_main(cases: dict[str, Any], argv: list[str]) -> None:
    """Entry point of the child: `--fork NAME...` runs each case in a fork of its own."""
    if argv[:1] == ["--fork"]:
        _fork_child(cases, argv[1:])
    else:
        _child(cases, argv or list(cases))


def assert_case_result(cases: dict[str, Any], results: dict[str, dict[str, Any]], name: str) -> None:
    """The case neither crashed nor hung, and raised what it names (or nothing)."""
    _fn, exc, match = cases[name]
    r = results[name]
    assert r["exc"] not in ("CRASH", "HANG"), f"{name}: {r['exc']}: {r['msg']}"
    if exc is None:
        assert r["exc"] is None, f"{name}: expected success, got {r['exc']}: {r['msg']}"
        return
    assert r["exc"] == exc, f"{name}: expected {exc}, got {r['exc']}: {r['msg']}"
    assert re.search(match, r["msg"]), f"{name}: message {r['msg']!r} does not match {match!r}"
