"""No function in stacks/ or constructs/ is longer than a screen: the limit ruff has no rule for.

ruff holds complexity (C901), branches and statements (PLR0912, PLR0915; pyproject.toml); this holds
length, counted from `def` to the function's last line, docstring and comments included.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAX_LINES = 60
CHECKED = ("stacks", "constructs")


def long_functions(source: str, filename: str) -> list[str]:
    """`file:line name (N lines)` for each function (nested ones and methods too) over MAX_LINES."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_LINES:
                found.append(f"{filename}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_in_stacks_or_constructs_exceeds_60_lines():
    files = sorted(path for folder in CHECKED for path in (REPO / folder).rglob("*.py"))
    assert len(files) > 20, f"found only {files}: the walk is looking in the wrong place"
    offenders = [f for path in files for f in long_functions(path.read_text(), str(path.relative_to(REPO)))]
    assert not offenders, f"functions over {MAX_LINES} lines; split them by concern:\n  " + "\n  ".join(offenders)


def test_the_check_counts_a_long_method_and_passes_a_short_one():
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_LINES))
    source = f"class A:\n    def long(self):\n{body}\n\n    def short(self):\n        return 1\n"
    assert long_functions(source, "a.py") == [f"a.py:2 long ({MAX_LINES + 1} lines)"]
