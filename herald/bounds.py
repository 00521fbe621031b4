"""Integer types that carry the range of the database column a value ends up in.

Every integer an API route accepts (body, query or path) must state both of its bounds:
the admin API refuses to start otherwise (``admin_api.input_types``). A value beyond a
column's range is then a 400 naming the field, not a driver error after validation, and
the OpenAPI document states the range.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

INT16_MAX = 2**15 - 1
INT32_MAX = 2**31 - 1
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

Id = Annotated[int, Meta(ge=1, le=INT64_MAX)]
"""A ``bigint`` key (every table's id)."""
IdOrZero = Annotated[int, Meta(ge=0, le=INT64_MAX)]
"""A ``bigint`` key or 0 for none: a keyset cursor's start, a category without parent."""
Int64 = Annotated[int, Meta(ge=INT64_MIN, le=INT64_MAX)]
"""Any ``bigint`` (a number compared with a ``bigint`` or ``numeric`` column)."""
Version = Annotated[int, Meta(ge=1, le=INT32_MAX)]
"""A template version number (an ``integer`` column)."""
NonNegativeInt32 = Annotated[int, Meta(ge=0, le=INT32_MAX)]
"""A count or a duration stored in an ``integer`` column."""
UnixTime = Annotated[int, Meta(ge=0, le=253_402_300_799)]
"""Seconds since 1970 up to the end of year 9999 (what a ``timestamptz`` and Python hold)."""


def parse_id(text: str) -> int:
    """The ``bigint`` key written in ``text`` (an opaque cursor's part); ValueError otherwise."""
    if (
        not (text.isascii() and text.isdigit() and len(text) <= 19)
        or not 1 <= int(text) <= INT64_MAX
    ):
        raise ValueError(f"not an id: {text[:40]!r}")
    return int(text)
