"""Keyset pages in one style: ``cursor`` in, ``next_cursor`` out (null on the last page).

Lists keyed by an id once took the id itself (``after_id``, ``before_id``,
``after_client_id``, ``before_version``) and answered ``next_after_id`` and the like.
Those parameters and fields still work and are documented as deprecated in the OpenAPI
document; a ``cursor``, when given, wins over them. Lists with a compound key (cases,
audit, timeline, readings, supervisor) always used a cursor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, TypeVar

import msgspec

from herald import cursors
from herald.bounds import Id

T = TypeVar("T")

#: The ``cursor`` query parameter: a page's ``next_cursor``, given back unchanged.
Cursor = Annotated[
    str, msgspec.Meta(min_length=1, max_length=200, description="The previous page's next_cursor.")
]
#: The old id parameter of a list.
DEPRECATED_PARAM = msgspec.Meta(
    description="Deprecated: pass the previous page's next_cursor as cursor instead.",
    extra_json_schema={"deprecated": True},
)
#: The old next-id field of a page.
DEPRECATED_FIELD = msgspec.Meta(
    description="Deprecated: use next_cursor.", extra_json_schema={"deprecated": True}
)


def start(cursor: str | None, legacy: int | None) -> int | None:
    """The key a page continues from: the id in ``cursor``, else the deprecated id parameter."""
    return legacy if cursor is None else cursors.decode(cursor, tuple[Id])[0]


def following(
    items: Sequence[T], limit: int, key: Callable[[T], int]
) -> tuple[int | None, str | None]:
    """(the deprecated next id, ``next_cursor``) of a full page; both None on the last one."""
    if len(items) < limit or not items:
        return None, None
    last = key(items[-1])
    return last, cursors.encode(last)
