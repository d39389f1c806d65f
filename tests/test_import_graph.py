"""The package's modules import each other without cycles (issue 12 item 6), counting
imports inside functions too: a deferred import is how a cycle hides."""
from __future__ import annotations

import ast
import os
from typing import Dict, List, Set

import sageattention

PKG_DIR = os.path.dirname(os.path.abspath(sageattention.__file__))


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, PKG_DIR)[:-3].replace(os.sep, ".")
    return "sageattention" if rel == "__init__" else "sageattention." + rel.removesuffix(".__init__")


def _modules() -> Dict[str, str]:
    found = {}
    for root, _, files in os.walk(PKG_DIR):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(root, f)
                found[_module_name(path)] = path
    return found


def _imports(name: str, path: str, known: Set[str]) -> Set[str]:
    is_pkg = path.endswith("__init__.py")
    package = name if is_pkg else name.rsplit(".", 1)[0]
    out: Set[str] = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rsplit(".", 1)[0]
            target = (base + "." + node.module if node.module else base) if node.level else (node.module or "")
            for alias in node.names:
                sub = target + "." + alias.name
                out.add(sub if sub in known else target)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    # a package's __init__ runs before any of its modules: edges into it are not cycles
    return {m for m in out if m in known and m != name and not m == "sageattention"}


def test_no_import_cycles() -> None:
    mods = _modules()
    graph = {m: _imports(m, p, set(mods)) for m, p in mods.items() if m != "sageattention"}
    assert "sageattention.core" in graph and graph["sageattention.core"], "the import scan found nothing"
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
