"""`python -m sageattention env` and `check` (sageattention/_diagnostics.py): env shows
every SAGEATTN_* variable the package reads, with its value and effect; check has rows
for each 8-bit P·V mode of the CPU backend (fp8 and int8), all within the bars."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from sageattention import _diagnostics

ROOT = Path(__file__).resolve().parent.parent


def _variables_read_by_the_sources() -> set[str]:
    """SAGEATTN_* names as Python string constants of the package, or read by the C++ core
    with getenv (build macros such as SAGEATTN_HAVE_X86_KERNELS are neither)."""
    names: set[str] = set()
    for path in (ROOT / "sageattention").rglob("*.py"):
        names |= set(re.findall(r"""["'](SAGEATTN_[A-Z0-9_]+)["']""", path.read_text(encoding="utf-8")))
    for path in (ROOT / "csrc").rglob("*.cc"):
        names |= set(re.findall(r"""getenv\("(SAGEATTN_[A-Z0-9_]+)"\)""", path.read_text(encoding="utf-8")))
    return names


def test_env_lists_every_variable_the_package_reads() -> None:
    read = _variables_read_by_the_sources()
    assert {"SAGEATTN_BACKEND", "SAGEATTN_CPU_PV", "SAGEATTN_CPU_ISA"} <= read, read
    listed = {name for name, _ in _diagnostics.ENV_VARS}
    assert listed == read, f"listed but not read: {listed - read}; read but not listed: {read - listed}"


def test_env_shows_values_and_effects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGEATTN_CPU_PV", "int8")
    monkeypatch.delenv("SAGEATTN_BACKEND", raising=False)
    rows = dict(_diagnostics.env_var_rows())
    assert rows["SAGEATTN_CPU_PV"].startswith("'int8'") and "P·V" in rows["SAGEATTN_CPU_PV"]
    assert rows["SAGEATTN_BACKEND"].startswith("(unset)") and "backend" in rows["SAGEATTN_BACKEND"]


def test_env_command_prints_the_variables() -> None:
    res = subprocess.run([sys.executable, "-m", "sageattention", "env"], capture_output=True, text=True,
                         timeout=120, check=False, env={"SAGEATTN_BACKEND": "cpu", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    lines = {line.split()[0]: line for line in res.stdout.splitlines() if line.strip()}
    for name, _ in _diagnostics.ENV_VARS:
        assert name in lines, res.stdout
    assert "'cpu'" in lines["SAGEATTN_BACKEND"]


def test_check_has_int8_pv_rows_that_pass() -> None:
    lines: list[str] = []
    assert _diagnostics.run_check(lines.append)
    rows = [line.split() for line in lines if line.startswith("(")]
    # recipe (4 tokens), qk, pv, causal, five figures, result
    by_pv = {pv: [r for r in rows if r[5] == pv] for pv in ("fp8", "int8")}
    n_recipes = len(_diagnostics.SUPPORTED_RECIPES)
    assert len(by_pv["fp8"]) == len(by_pv["int8"]) == n_recipes * 2 * 2, lines
    assert all(r[-1] == "ok" for r in rows)
