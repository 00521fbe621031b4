"""Keeping the UI's gettext catalogues in step with the templates and page views.

``python -m admin_api.ui.catalogues update`` extracts the messages (Babel, with jinja2's
extractor), merges them into ``locale/uk/LC_MESSAGES/messages.po`` (new ones
untranslated, gone ones dropped) and compiles the ``.mo`` beside it; ``check`` says what
is missing. The compiled ``.mo`` is committed, so an install needs no build step; the
tests fail when the ``.po`` lacks a message of the code, has one untranslated or fuzzy,
or when the ``.mo`` was not recompiled after the ``.po`` changed.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

UI_DIR = Path(__file__).parent
ROOT = UI_DIR.parent.parent
LOCALE_DIR = UI_DIR / "locale"
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}
METHOD_MAP = [("admin_api/ui/**.py", "python"), ("admin_api/ui/templates/**.html", "jinja2")]
OPTIONS = {
    "admin_api/ui/templates/**.html": {
        "extensions": "jinja2.ext.i18n",
        "trim_blocks": "True",
        "lstrip_blocks": "True",
    }
}
UK_PLURALS = (
    "nplurals=3; plural=(n%10==1 && n%100!=11 ? 0 : n%10>=2 && n%10<=4 && "
    "(n%100<10 || n%100>=20) ? 1 : 2);"
)


def po_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / "messages.po"


def extract() -> Catalog:
    """Every message id the UI's code and templates use."""
    catalog = Catalog()
    for filename, lineno, message, comments, context in extract_from_dir(
        str(ROOT), METHOD_MAP, OPTIONS, KEYWORDS, strip_comment_tags=True
    ):
        if filename.startswith("admin_api/ui/") or filename.startswith("admin_api\\ui\\"):
            catalog.add(
                message, None, [(filename, lineno)], auto_comments=comments, context=context
            )
    return catalog


def load(language: str) -> Catalog:
    with po_path(language).open("rb") as f:
        return read_po(f, locale=language)


def compiled(catalog: Catalog) -> bytes:
    out = io.BytesIO()
    write_mo(out, catalog, use_fuzzy=False)
    return out.getvalue()


def problems(language: str = "uk") -> list[str]:
    """What keeps the catalogue of ``language`` from being complete and compiled."""
    catalog = load(language)
    found = []
    ids = {m.id if isinstance(m.id, str) else m.id[0] for m in catalog if m.id}
    for message in extract():
        key = message.id if isinstance(message.id, str) else message.id[0]
        if message.id and key not in ids:
            found.append(f"not in the catalogue: {key!r}")
    for message in catalog:
        if not message.id:
            continue
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        if message.fuzzy or not all(strings):
            found.append(f"untranslated or fuzzy: {message.id!r}")
    mo = po_path(language).with_suffix(".mo")
    if not mo.exists() or mo.read_bytes() != compiled(catalog):
        found.append(f"{mo.name} is out of date: run python -m admin_api.ui.catalogues update")
    return found


def update(language: str = "uk") -> None:
    """Merge the extracted messages into the catalogue, write it and its ``.mo``."""
    catalog = load(language)
    catalog.update(extract(), no_fuzzy_matching=True)
    catalog.obsolete.clear()
    with po_path(language).open("wb") as f:
        write_po(f, catalog, omit_header=False, sort_output=True, no_location=True, width=100)
    po_path(language).with_suffix(".mo").write_bytes(compiled(load(language)))


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "check"
    if command == "update":
        update()
    found = problems()
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
