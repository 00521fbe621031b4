"""One of each (issue 18, point 5): one phone normaliser, one keyset-cursor codec."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from herald import cursors
from herald.bounds import Id
from herald.cursors import AwareTime
from herald.errors import InvalidInput
from herald.phones import normalise_phone

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("admin_api", "crm", "dispatcher", "herald", "providers", "rules")


def _modules_matching(pattern: str) -> list[str]:
    found = re.compile(pattern)
    return sorted(
        p.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for p in (ROOT / package).rglob("*.py")
        if found.search(p.read_text())
        and not p.relative_to(ROOT).as_posix().startswith(("herald/cli/seed/", "herald/cli/bench/"))
    )


def test_phones_are_parsed_in_one_place() -> None:
    assert _modules_matching(r"phonenumbers\.parse\(") == ["herald/phones.py"]


def test_cursors_are_encoded_in_one_place() -> None:
    # rules/consent.py signs unsubscribe links with base64 too: not a cursor.
    assert _modules_matching(r"urlsafe_b64(en|de)code") == ["herald/cursors.py", "rules/consent.py"]


@pytest.mark.parametrize(
    ("written", "e164"),
    [
        ("0671234567", "+380671234567"),
        ("+38 (067) 123-45-67", "+380671234567"),
        ("380671234567", "+380671234567"),
        ("+4915112345678", "+4915112345678"),
        ("12345", None),
        ("anonymous", None),
        ("", None),
    ],
)
def test_a_phone_written_any_usual_way_is_one_e164_number(written: str, e164: str | None) -> None:
    assert normalise_phone(written) == e164


def test_a_cursor_gives_back_its_key_and_refuses_anything_else() -> None:
    at = dt.datetime(2026, 3, 1, 12, 30, tzinfo=dt.UTC)
    shape = tuple[AwareTime, Id]
    assert cursors.decode(cursors.encode(at, 42), shape) == (at, 42)
    assert cursors.decode(cursors.encode(dt.date(2026, 3, 1), 7), tuple[dt.date, Id]) == (
        dt.date(2026, 3, 1),
        7,
    )
    for bad in (
        "zzz",
        "%%%",
        "",
        cursors.encode("2026-03-01T12:30:00", 42),
        cursors.encode(at, 0),
        cursors.encode(at, 2**63),
        cursors.encode(at),
    ):
        with pytest.raises(InvalidInput) as err:
            cursors.decode(bad, shape)
        assert err.value.field == "cursor"
