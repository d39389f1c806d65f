"""A fresh install's first command runs clean (issue 12 item 7): `python -m sageattention
check` passes and writes nothing to stderr, in particular not torch's "Failed to
initialize NumPy" warning, which is why numpy is a declared dependency."""
from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys


def test_numpy_is_a_declared_dependency() -> None:
    requires = importlib.metadata.requires("sageattention") or []
    names = {re.split(r"[\s;<>=!~\[]", r, maxsplit=1)[0].lower() for r in requires if "extra ==" not in r}
    assert "numpy" in names, requires


def test_check_runs_clean() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS",)}
    res = subprocess.run([sys.executable, "-m", "sageattention", "check"], capture_output=True, text=True,
                         timeout=600, env=env, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "all recipes pass" in res.stdout, res.stdout
    assert res.stderr.strip() == "", "stderr of a clean first run:\n" + res.stderr
