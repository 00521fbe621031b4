"""Hostile input refused at the door, once for every route.

The endpoint wrapper (``admin_api.routing``) passes every request through these checks
before a view sees it, so no view has to remember them:

- a body declared as JSON must come as JSON (415 otherwise), at most ``MAX_JSON_DEPTH``
  arrays and objects deep, and without the NUL character, which PostgreSQL cannot store;
- query parameters and path parameters carry no NUL either, and each path parameter has
  a declared type (``PATH_PARAMS``), integers with the range of their column;
- every integer of every declared body and query type states both bounds
  (``unbounded_integers``; the app refuses to start otherwise), so a value beyond a column's
  range is a 400 naming the field, and the OpenAPI document states the range.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

import msgspec
import msgspec.inspect as mi
from aiohttp import web
from multidict import MultiDictProxy

from herald.bounds import INT64_MAX, INT64_MIN, Id, Version
from herald.errors import InvalidInput

MAX_JSON_DEPTH = 32
"""Arrays and objects nested deeper than this are refused before decoding."""

NUL_DETAIL = "must not contain the NUL character (\\u0000)"

JSON_TYPES = ("application/json",)

PathText = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]

PATH_PARAMS: dict[str, Any] = {
    "version": Version,
    "token": Annotated[str, msgspec.Meta(min_length=1, max_length=1000)],
    "or_number": Annotated[str, msgspec.Meta(min_length=1, max_length=20)],
    "role": Annotated[str, msgspec.Meta(min_length=1, max_length=63)],
    **{
        name: PathText
        for name in (
            "channel",
            "code",
            "entity_id",
            "entity_type",
            "message",
            "name",
            "permission",
            "provider",
            "region",
            "source_id",
        )
    },
}
"""The type of each path parameter by name; any other ``<name>_id`` is a ``bigint`` key."""


def path_param_type(name: str) -> Any:
    """The declared type of a path parameter; KeyError for an undeclared name."""
    if name in PATH_PARAMS:
        return PATH_PARAMS[name]
    if name.endswith("_id"):
        return Id
    raise KeyError(name)


@functools.cache
def _is_integer(name: str) -> bool:
    return isinstance(mi.type_info(path_param_type(name)), mi.IntType)


def path_value(name: str, raw: str) -> Any:
    """A path parameter converted to its declared type, or InvalidInput naming it."""
    if "\x00" in raw:
        raise InvalidInput(name, NUL_DETAIL)
    type_ = path_param_type(name)
    value: Any = raw
    if _is_integer(name):
        if not raw.isascii() or not raw.isdigit():
            raise InvalidInput(name, f"must be a positive integer, got {raw[:40]!r}")
        # Thousands of digits would cost int() dearly; anything past 20 is out of range.
        value = int(raw) if len(raw) <= 20 else INT64_MAX + 1
    try:
        return msgspec.convert(value, type_)
    except msgspec.ValidationError as exc:
        raise InvalidInput(name, str(exc).split(" - at ")[0]) from None


def check_path(match_info: Mapping[str, str]) -> None:
    """Refuse a request whose path parameters do not fit their declared types."""
    for name, raw in match_info.items():
        path_value(name, raw)


def check_query(query: Mapping[str, Any]) -> None:
    """Refuse NUL in any query parameter's name or value (a value may be a list of them)."""
    for key, value in query.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if "\x00" in key or any(isinstance(v, str) and "\x00" in v for v in values):
            raise InvalidInput(key.replace("\x00", "") or "query", NUL_DETAIL)


def require_json(request: web.Request) -> None:
    """415 unless the request's body is declared as JSON (``application/json`` or ``+json``).

    No body at all passes: the decoder answers that one with a 400 saying a body is needed.
    """
    if not request.body_exists:
        return
    kind = request.content_type
    if kind in JSON_TYPES or (kind.startswith("application/") and kind.endswith("+json")):
        return
    raise web.HTTPUnsupportedMediaType(
        text=f"send the body as application/json, not {kind or 'without a Content-Type'}",
        headers={"Accept-Post": "application/json"},
    )


def header_text(request: web.Request, name: str, max_length: int = 500) -> str | None:
    """A header's value fit to store: invalid UTF-8 replaced (aiohttp keeps its bytes as
    lone surrogates, which PostgreSQL's driver cannot encode), cut to ``max_length``."""
    value = request.headers.get(name)
    if value is None:
        return None
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")[:max_length]


async def read_form(request: web.Request) -> MultiDictProxy[Any]:
    """A form body (urlencoded or multipart) as fields; a malformed one, NUL included, is a 400."""
    try:
        form = await request.post()
    except ValueError as exc:  # e.g. multipart/form-data without a boundary
        raise InvalidInput("body", f"malformed form: {exc}") from None
    for key, value in form.items():
        if "\x00" in key or (isinstance(value, str) and "\x00" in value):
            raise InvalidInput(key.replace("\x00", "") or "body", NUL_DETAIL)
    return form


# -- JSON depth and NUL --------------------------------------------------------------------

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_BRACKETS = bytes(range(256)).translate(bytes.maketrans(b"{}", b"[]"))
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def too_deep(data: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text nests arrays and objects more than ``limit`` deep.

    Runs at C speed: strings are cut out, every other byte but brackets dropped, then each
    pass removes the innermost pairs, so the passes needed are the depth. A body with no
    more than ``limit`` opening brackets in all is not scanned at all.
    """
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", data).translate(_BRACKETS, _NOT_BRACKET)
    for _ in range(limit):
        shorter = brackets.replace(b"[]", b"")
        if shorter == brackets:
            # Malformed (unbalanced): too deep if what stays open is; else the decoder says so.
            return brackets.count(b"[") > limit
        if not shorter:
            return False
        brackets = shorter
    return True


# A \u0000 escape that is not itself an escaped backslash followed by "u0000".
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def nul_field(data: bytes) -> str | None:
    """The path of the first string (or key) of JSON text holding NUL, else None."""
    if b"\\u0000" not in data or not _NUL_ESCAPE.search(data):
        return None
    try:
        value = msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return "body"
    return _nul_path(value, "") or "body"


def _nul_path(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if "\x00" in key:
                return here.replace("\x00", "")
            found = _nul_path(item, here)
            if found is not None:
                return found
    elif isinstance(value, list):
        for n, item in enumerate(value):
            found = _nul_path(item, f"{path}[{n}]")
            if found is not None:
                return found
    return None


# -- integer bounds of the declared types --------------------------------------------------


def unbounded_integers(type_: Any, name: str | None = None) -> list[str]:
    """Paths of every integer in ``type_`` lacking a lower or an upper bound within bigint."""
    found: list[str] = []
    _walk(mi.type_info(type_), name or str(getattr(type_, "__name__", type_)), found, set())
    return found


def _walk(info: mi.Type, path: str, found: list[str], seen: set[type]) -> None:
    if isinstance(info, mi.IntType):
        low = info.ge if info.ge is not None else None if info.gt is None else info.gt + 1
        high = info.le if info.le is not None else None if info.lt is None else info.lt - 1
        if low is None or high is None or low < INT64_MIN or high > INT64_MAX:
            found.append(path)
    elif isinstance(info, (mi.StructType, mi.TypedDictType, mi.DataclassType, mi.NamedTupleType)):
        cls = info.cls
        if cls in seen:
            return
        for f in info.fields:
            _walk(f.type, f"{path}.{f.name}", found, seen | {cls})
    elif isinstance(info, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
        _walk(info.item_type, f"{path}[]", found, seen)
    elif isinstance(info, mi.TupleType):
        for n, item in enumerate(info.item_types):
            _walk(item, f"{path}[{n}]", found, seen)
    elif isinstance(info, mi.DictType):
        _walk(info.key_type, f"{path}{{key}}", found, seen)
        _walk(info.value_type, f"{path}{{}}", found, seen)
    elif isinstance(info, mi.UnionType):
        for item in info.types:
            _walk(item, path, found, seen)


def check_bounded(types: Iterable[Any]) -> None:
    """Raise TypeError naming every integer without both bounds among ``types``."""
    missing = [p for t in types for p in unbounded_integers(t)]
    if missing:
        raise TypeError(
            "integers without both bounds (use herald.bounds, or Meta(ge=, le=) "
            "within the column's range): " + ", ".join(sorted(set(missing)))
        )
