"""Every `# type: ignore` says what it silences and why: mypy's config enforces the error code
(`ignore-without-code`) and drops unused ones (`warn_unused_ignores`); this test wants the
reason, a comment after it on the same line."""

from __future__ import annotations

import io
import pathlib
import re
import tokenize

ROOT = pathlib.Path(__file__).resolve().parent.parent
# "# type: ignore[code, code]  # why".
EXPLAINED = re.compile(r"#\s*type:\s*ignore\[[a-z0-9-]+(,\s*[a-z0-9-]+)*\]\s+#\s*\S")
IGNORE = re.compile(r"#\s*type:\s*ignore\b")


def _python_files() -> list[pathlib.Path]:
    folders = (
        "herald",
        "crm",
        "dispatcher",
        "rules",
        "providers",
        "admin_api",
        "loadtest",
        "tests",
    )
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def unexplained(source: str) -> list[tuple[int, str]]:
    """(line, comment) of each type-ignore comment without its code and reason."""
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if (
            token.type == tokenize.COMMENT
            and IGNORE.search(token.string)
            and not EXPLAINED.search(token.string)
        ):
            found.append((token.start[0], token.string))
    return found


def test_the_check_tells_an_explained_ignore_from_a_bare_one() -> None:
    assert unexplained("x = f()  # type: ignore[arg-type]  # a bad value on purpose\n") == []
    assert unexplained("x = f()  # type: ignore[union-attr, arg-type]  # see above\n") == []
    assert unexplained("x = f()  # type: ignore\n") == [(1, "# type: ignore")]
    assert unexplained("x = f()  # type: ignore[arg-type]\n") == [(1, "# type: ignore[arg-type]")]
    # Only comments count: a string that mentions one is not an ignore.
    assert unexplained('x = "# type: ignore"\n') == []


def test_every_type_ignore_has_a_code_and_a_reason() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {comment}"
        for path in _python_files()
        for line, comment in unexplained(path.read_text(encoding="utf-8"))
    ]
    assert not found, (
        "say why after the ignore, e.g. "
        "`# type: ignore[arg-type]  # a bad value on purpose`:\n" + "\n".join(found)
    )
