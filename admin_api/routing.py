"""Endpoint declarations: every route names its permission and its msgspec types.

A view is declared with ``@endpoints.post("/path", permission=..., body=Type,
response=Type)``. The wrapper decodes and validates the body and query string into the
declared types (a bad value becomes a 400 problem naming the field), calls the view, and
encodes what it returns. The same declarations generate the OpenAPI document and let the
security middleware and a test check that no route goes without a permission.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from admin_api import inputs
from herald.errors import InvalidInput

PUBLIC = "public"
"""Anyone, without credentials (health, readiness, metrics, login, the API document)."""
AUTHENTICATED = "authenticated"
"""Any logged-in user, whatever their roles (their own profile, logout)."""
PROVIDER = "provider"
"""An outside provider posting receipts: the provider API token, not a user session."""
PRODUCER = "producer"
"""A system posting events (billing, shop, app): its own producer API key, not a user session."""

_encoder = msgspec.json.Encoder()
_MISSING_FIELD = re.compile(r"(?:missing required|contains unknown) field `(\w+)`")
_AT_PATH = re.compile(r"\s*-\s*at `\$((?:\.\w+|\[\d+\])*)`")

Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    permission: str
    summary: str
    tags: tuple[str, ...]
    body: type | None = None
    query: type | None = None
    response: Any = None
    status: int = 200
    errors: tuple[int, ...] = ()
    media_type: str = "application/json"


ENDPOINT_ATTR = "__herald_endpoint__"


def endpoint_of(handler: object) -> Endpoint | None:
    """The declaration behind a route's handler, or None for an undeclared one."""
    return getattr(handler, ENDPOINT_ATTR, None)


def validation_field(error: msgspec.ValidationError) -> tuple[str, str]:
    """(field path, message) out of a msgspec validation error."""
    message = str(error)
    missing = _MISSING_FIELD.search(message)
    at = _AT_PATH.search(message)
    path = at.group(1).lstrip(".") if at else ""
    if missing:
        path = f"{path}.{missing.group(1)}" if path else missing.group(1)
    return path or "body", _AT_PATH.sub("", message)


def decode_json(data: bytes, type_: Any, *, where: str = "body") -> Any:
    """Decode and validate JSON into ``type_``; raise InvalidInput naming the field.

    Nesting deeper than ``inputs.MAX_JSON_DEPTH`` and the NUL character are refused first.
    """
    if not data:
        raise InvalidInput(where, "a JSON body is required")
    if inputs.too_deep(data):
        raise InvalidInput(where, f"JSON nested more than {inputs.MAX_JSON_DEPTH} levels deep")
    nul = inputs.nul_field(data)
    if nul is not None:
        raise InvalidInput(nul if nul != "body" else where, inputs.NUL_DETAIL)
    try:
        return msgspec.json.decode(data, type=type_)
    except msgspec.ValidationError as exc:
        path, message = validation_field(exc)
        raise InvalidInput(path, message) from None
    except msgspec.DecodeError as exc:
        raise InvalidInput(where, f"malformed JSON: {exc}") from None
    except RecursionError:
        raise InvalidInput(where, "JSON nested too deeply") from None


def decode_query(query: Any, type_: type) -> Any:
    """Convert query-string parameters into ``type_`` (strings coerced to numbers and booleans)."""
    inputs.check_query(query)
    try:
        return msgspec.convert(dict(query), type_, strict=False)
    except msgspec.ValidationError as exc:
        path, message = validation_field(exc)
        raise InvalidInput(path or "query", message) from None


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(value), status=status, content_type="application/json")


@dataclass
class EndpointTable:
    """The endpoints of one views module, added to the app by ``init_app``."""

    tag: str
    endpoints: list[tuple[Endpoint, Handler]] = field(default_factory=list)

    def route(
        self,
        method: str,
        path: str,
        *,
        permission: str,
        summary: str = "",
        body: type | None = None,
        query: type | None = None,
        response: Any = None,
        status: int = 200,
        errors: tuple[int, ...] = (),
        media_type: str = "application/json",
    ) -> Callable[[Handler], Handler]:
        def register(view: Handler) -> Handler:
            declared = Endpoint(
                method,
                path,
                permission,
                summary or (view.__doc__ or "").strip().splitlines()[0],
                (self.tag,),
                body,
                query,
                response,
                status,
                errors,
                media_type,
            )

            @functools.wraps(view)
            async def handler(request: web.Request) -> web.StreamResponse:
                inputs.check_path(request.match_info)
                inputs.check_query(request.query)
                kwargs: dict[str, Any] = {}
                if body is not None:
                    inputs.require_json(request)
                    kwargs["body"] = decode_json(await request.read(), body)
                if query is not None:
                    kwargs["query"] = decode_query(request.query, query)
                result = await view(request, **kwargs)
                if isinstance(result, web.StreamResponse):
                    return result
                if result is None:
                    return web.Response(status=204)
                return json_response(result, status)

            setattr(handler, ENDPOINT_ATTR, declared)
            self.endpoints.append((declared, handler))
            return handler

        return register

    def get(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        return self.route("DELETE", path, **kw)

    def add_to(self, app: web.Application) -> None:
        for declared, handler in self.endpoints:
            app.router.add_route(declared.method, declared.path, handler)


def path_int(request: web.Request, name: str) -> int:
    """An integer path parameter within its declared range (``inputs.PATH_PARAMS``), or a 400."""
    value = inputs.path_value(name, request.match_info[name])
    assert isinstance(value, int), f"path parameter {name} is not declared as an integer"
    return value
