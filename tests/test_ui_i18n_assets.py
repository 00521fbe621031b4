"""The UI's catalogues, plural rules, formats and vendored files, without a server."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from decimal import Decimal

import pytest

from admin_api.ui import catalogues, i18n
from admin_api.ui.static_files import STATIC_DIR, StaticFiles

FIRST_VISIT_LIMIT = 64 * 1024  # gzipped, as sent


def test_the_ukrainian_catalogue_is_complete_and_compiled() -> None:
    # Every message of the templates and page views is translated, none fuzzy, and the
    # committed .mo is what the .po compiles to.
    assert catalogues.problems("uk") == []


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, "1 звернення"),
        (2, "2 звернення"),
        (4, "4 звернення"),
        (5, "5 звернень"),
        (11, "11 звернень"),
        (12, "12 звернень"),
        (14, "14 звернень"),
        (21, "21 звернення"),
        (22, "22 звернення"),
        (25, "25 звернень"),
        (101, "101 звернення"),
        (111, "111 звернень"),
    ],
)
def test_ukrainian_plurals_have_three_forms(n: int, expected: str) -> None:
    uk = i18n.translations("uk")
    assert uk.ngettext("%(num)d case", "%(num)d cases", n) % {"num": n} == expected


@pytest.mark.parametrize(("n", "expected"), [(1, "1 платіж"), (3, "3 платежі"), (7, "7 платежів")])
def test_payments_too(n: int, expected: str) -> None:
    uk = i18n.translations("uk")
    assert uk.ngettext("%(num)d payment", "%(num)d payments", n) % {"num": n} == expected


def test_dates_in_kyiv_time_and_money_in_hryvnias() -> None:
    moment = dt.datetime(2026, 7, 1, 21, 30, tzinfo=dt.UTC)  # 00:30 next day in Kyiv (UTC+3)
    uk, en = i18n.Formats("uk"), i18n.Formats("en")
    assert uk.datetime(moment) == "02.07.2026 00:30"
    assert uk.long_date(dt.date(2026, 3, 9)) == "9 березня 2026\u202fр."
    assert uk.money(Decimal("1234.5")) == "1\xa0234,50\xa0₴"
    assert en.money(Decimal("1234.5")) == "1,234.50\xa0UAH"
    assert uk.money(None) == "—"


def test_vendored_files_match_their_listed_hashes() -> None:
    listing = (STATIC_DIR / "VENDORED.md").read_text()
    rows = re.findall(
        r"^\| ([\w.-]+\.(?:js|css)) \| ([@\w./-]+) \| ([\d.]+) \|.*\| ([0-9a-f]{64}) \|$",
        listing,
        re.MULTILINE,
    )
    assert {r[0] for r in rows} == {
        "htmx.min.js",
        "htmx-sse.min.js",
        "alpine-csp.min.js",
        "uplot.min.js",
        "uplot.min.css",
    }
    for name, _package, _version, digest in rows:
        assert hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest() == digest, name
    htmx = (STATIC_DIR / "htmx.min.js").read_text()
    assert 'version:"2.0.11"' in htmx  # pinned htmx 2.x


def test_first_visit_scripts_and_styles_stay_small() -> None:
    """What every page links (base.html) crosses the wire gzipped: keep that small. Pages
    link their own scripts (charts, builders) beside it; those do not count here."""
    static = StaticFiles()
    base = (STATIC_DIR.parent / "templates" / "base.html").read_text()
    linked = re.findall(r"static\('([\w.-]+)'\)", base)
    assert {"htmx.min.js", "alpine-csp.min.js", "herald.css"} <= set(linked)
    assert not any(name.startswith("uplot") for name in linked)
    total = sum(len(static.gzipped[name]) for name in linked)
    assert total <= FIRST_VISIT_LIMIT, f"{total / 1024:.1f} KB of JS and CSS, gzipped"
