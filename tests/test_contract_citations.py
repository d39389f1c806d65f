"""The project owns its contract (issue 12 item 4): code, tests and docs cite
docs/CONTRACT.md, every citation names a section (and item) that exists, and nothing
cites the original spec file, which is not in the repository."""
from __future__ import annotations

import os
import re
from typing import Dict, Iterator, Set, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTRACT = os.path.join(ROOT, "docs", "CONTRACT.md")
SOURCE_DIRS = ("sageattention", "tests", "csrc", "include", "docs", "examples", "bench", "scripts", ".ci")
TOP_FILES = ("README.md", "SECURITY.md", "CMakeLists.txt", "pyproject.toml")
SUFFIXES = (".py", ".md", ".cc", ".h", ".sh", ".txt", ".toml", "")
OUTSIDE_SPEC = "SEMANTICS" + ".md"  # spelled apart so this file does not cite it
CITATION = re.compile(r"docs/CONTRACT\.md (§\d+(?:\.\d+)?(?:\s*[-–,]\s*§\d+(?:\.\d+)?)*)")


def _text_files() -> Iterator[Tuple[str, str]]:
    paths = [os.path.join(ROOT, f) for f in TOP_FILES]
    for d in SOURCE_DIRS:
        for base, dirs, files in os.walk(os.path.join(ROOT, d)):
            dirs[:] = [x for x in dirs if not x.startswith((".", "__pycache__", "build"))]
            paths += [os.path.join(base, f) for f in files if os.path.splitext(f)[1] in SUFFIXES]
    for p in paths:
        try:
            with open(p, encoding="utf-8") as fh:
                yield os.path.relpath(p, ROOT), fh.read()
        except (OSError, UnicodeDecodeError):
            continue


def _contract_items() -> Dict[int, Set[int]]:
    """Section number -> the numbers of its numbered items."""
    items: Dict[int, Set[int]] = {}
    section = None
    with open(CONTRACT, encoding="utf-8") as fh:
        for line in fh:
            m = re.match(r"## §(\d+) ", line)
            if m:
                section = int(m.group(1))
                items[section] = set()
                continue
            m = re.match(r"(\d+)\. ", line)
            if m and section is not None:
                items[section].add(int(m.group(1)))
    return items


def test_contract_keeps_the_section_numbers() -> None:
    items = _contract_items()
    assert set(range(1, 7)) <= set(items), sorted(items)
    assert items[3] >= set(range(1, 9)), "§3 items 1-8 are cited as §3.N"


def test_nothing_cites_a_file_outside_the_repository() -> None:
    offenders = [f"{path}:{i}" for path, text in _text_files()
                 for i, line in enumerate(text.splitlines(), 1) if OUTSIDE_SPEC in line]
    assert not offenders, offenders


def test_every_contract_citation_exists() -> None:
    items = _contract_items()
    bad, count = [], 0
    for path, text in _text_files():
        for m in CITATION.finditer(text):
            for ref in re.findall(r"§(\d+)(?:\.(\d+))?", m.group(1)):
                count += 1
                section, item = int(ref[0]), ref[1]
                if section not in items or (item and int(item) not in items[section]):
                    bad.append(f"{path}: §{ref[0]}{'.' + item if item else ''}")
    assert count > 20, f"only {count} citations found: is the scan looking in the right places?"
    assert not bad, bad
