"""Form bodies of page requests, decoded into msgspec types like the API's JSON bodies."""

from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web

from admin_api import inputs
from admin_api.routing import decode_query

T = TypeVar("T")


async def form(request: web.Request, type_: type[T], *, lists: tuple[str, ...] = ()) -> T:
    """The posted form as ``type_``: empty fields are absent, ``csrf_token`` is dropped,
    fields named in ``lists`` keep all their values. A bad field is a 400 naming it."""
    posted = await inputs.read_form(request)  # a malformed body or a NUL is a 400
    values: dict[str, Any] = {}
    for key in set(posted.keys()):
        if key == "csrf_token":
            continue
        if key in lists:
            values[key] = [v for v in posted.getall(key) if isinstance(v, str) and v != ""]
        else:
            value = posted.get(key)
            if isinstance(value, str) and value.strip() != "":
                values[key] = value.strip()
    return decode_query(values, type_)


def query(request: web.Request, type_: type[T]) -> T:
    """The query string as ``type_``, empty parameters left out."""
    return decode_query({k: v for k, v in request.query.items() if v.strip() != ""}, type_)
