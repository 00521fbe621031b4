"""What import-linter cannot see: imports inside functions.

An import inside a function hides a dependency from `lint-imports` (it reads every import,
but a cycle kept importable that way is still a cycle) and from a reader. Only the modules
below may do it, each for the reason given; the contracts themselves are in
``[tool.importlinter]`` of pyproject.toml and run by ``make test``.
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("herald", "crm", "rules", "providers", "dispatcher", "admin_api", "loadtest")

# Module -> why it imports inside functions.
INNER_IMPORTS_ALLOWED = {
    "herald.cli": "each command imports what it runs when it runs: `herald --help` or "
    "`herald migrate` need not load the web app, the worker or Playwright "
    "(~0.5 s to import instead of several seconds)",
    "herald.cli.bench": "the same for the benchmarks the CLI registers",
    "herald.cli.bench.segments": "imported to build the CLI's parser; measuring code loads when run",
    "herald.cli.bench.ui": "imported to build the CLI's parser; measuring code loads when run",
    "herald.cli.browser": "Playwright (heavy, drives Chromium) loads only for the commands using it",
}


def _module(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def inner_imports(source: str) -> list[tuple[int, str]]:
    """(line, statement) of every import inside a function or method of ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    found.append((inner.lineno, ast.unparse(inner)))
    return sorted(set(found))


def _all_inner_imports() -> dict[str, list[tuple[int, str]]]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            imports = inner_imports(path.read_text(encoding="utf-8"))
            if imports:
                found[_module(path)] = imports
    return found


def test_the_walk_finds_imports_in_functions_methods_and_nested_blocks() -> None:
    source = (
        "import os\n"
        "def f():\n    import json\n"
        "class C:\n    async def m(self):\n        if True:\n            from a import b\n"
        "x = 1\n"
    )
    assert inner_imports(source) == [(3, "import json"), (7, "from a import b")]


def test_no_imports_inside_functions_outside_the_allowlist() -> None:
    offending = [
        f"{module}:{line}: {statement}"
        for module, imports in _all_inner_imports().items()
        if module not in INNER_IMPORTS_ALLOWED
        for line, statement in imports
    ]
    assert not offending, (
        "import at module level (a cycle is fixed by moving the shared "
        "thing down, not by hiding the import):\n" + "\n".join(offending)
    )


def test_every_allowed_module_still_needs_its_exception() -> None:
    found = _all_inner_imports()
    assert not [m for m in INNER_IMPORTS_ALLOWED if m not in found]
