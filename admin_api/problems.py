"""RFC 9457 problem responses: every 4xx and 5xx the API sends is one of these."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import asyncpg
import msgspec
from aiohttp import web
from redis import exceptions as redis_exceptions

from admin_api.typedefs import REQUEST_ID
from herald.errors import (
    AccountLocked,
    AuthenticationFailed,
    Conflict,
    HeraldError,
    InvalidInput,
    NotFound,
    TooManyAttempts,
)

log = logging.getLogger("herald.api")

PROBLEM_CONTENT_TYPE = "application/problem+json"
_encoder = msgspec.json.Encoder()


class FieldError(msgspec.Struct, frozen=True):
    field: str
    message: str


class Problem(msgspec.Struct, frozen=True, omit_defaults=True):
    """An RFC 9457 problem detail; ``errors`` names each bad field of a 400."""

    type: str
    title: str
    status: int
    detail: str = ""
    instance: str = ""
    request_id: str = ""
    errors: list[FieldError] = []
    locked_until: str | None = None
    checks: dict[str, Any] | None = None


_STATUS_OF: dict[type[HeraldError], int] = {
    InvalidInput: 400,
    AuthenticationFailed: 401,
    NotFound: 404,
    Conflict: 409,
    AccountLocked: 423,
    TooManyAttempts: 429,
}


def problem_response(
    request: web.Request,
    status: int,
    *,
    code: str | None = None,
    detail: str = "",
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    """A problem+json response; ``code`` becomes the type URI ``/problems/<code>``."""
    title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    problem = Problem(
        type=f"/problems/{code}" if code else "about:blank",
        title=title,
        status=status,
        detail=detail,
        instance=request.path,
        request_id=request.get(REQUEST_ID, ""),
        errors=errors or [],
        **extra,
    )
    return web.Response(
        body=_encoder.encode(problem),
        status=status,
        content_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


def from_domain(request: web.Request, error: HeraldError) -> web.Response:
    status = next((s for cls, s in _STATUS_OF.items() if isinstance(error, cls)), 400)
    if isinstance(error, InvalidInput):
        return problem_response(
            request,
            status,
            code=error.code,
            detail=error.detail,
            errors=[FieldError(error.field, error.detail)],
        )
    if isinstance(error, AccountLocked):
        return problem_response(
            request, status, code=error.code, detail=error.detail, locked_until=error.until
        )
    if isinstance(error, TooManyAttempts):
        return problem_response(
            request,
            status,
            code=error.code,
            detail=error.detail,
            headers={"Retry-After": str(error.retry_after)},
        )
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return problem_response(request, status, code=error.code, detail=error.detail, headers=headers)


@web.middleware
async def problem_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Turn domain errors, HTTP errors and crashes into problem bodies; never leak a trace."""
    try:
        response = await handler(request)
    except HeraldError as error:
        return from_domain(request, error)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == PROBLEM_CONTENT_TYPE:
            raise
        detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else ""
        headers = {
            k: v
            for k, v in exc.headers.items()
            if k.lower() in ("allow", "accept-post", "retry-after", "www-authenticate")
        }
        return problem_response(request, exc.status, detail=detail, headers=headers)
    except (
        ConnectionError,
        redis_exceptions.ConnectionError,
        redis_exceptions.TimeoutError,
        asyncpg.exceptions.TooManyConnectionsError,
        asyncpg.exceptions.CannotConnectNowError,
        asyncpg.exceptions.PostgresConnectionError,
    ) as exc:
        # Redis, PostgreSQL or the network away for a moment (a restart): not a crash, and
        # a caller that retries (a provider posting receipts, a producer) gets through soon.
        log.warning("service unreachable in %s %s: %r", request.method, request.path, exc)
        return problem_response(
            request,
            503,
            code="service-unavailable",
            detail="a service Herald needs is unreachable for a moment; retry shortly",
            headers={"Retry-After": "2"},
        )
    except asyncpg.exceptions.QueryCanceledError:
        # The statement timeout: the database is overloaded or the query too broad. Not the
        # caller's fault and not a crash: 503 with a hint, so a client may narrow or retry.
        log.warning("statement timeout in %s %s", request.method, request.path)
        return problem_response(
            request,
            503,
            code="query-timeout",
            detail="the database did not answer in time; narrow the query or retry",
            headers={"Retry-After": "5"},
        )
    except Exception:  # the last line of defence: log it whole, tell the client little
        log.exception("unhandled error in %s %s", request.method, request.path)
        return problem_response(
            request,
            500,
            code="internal-error",
            detail="an internal error occurred; quote the request id to the administrator",
        )
    if (
        response.status >= 400
        and response.content_type != PROBLEM_CONTENT_TYPE
        and isinstance(response, web.Response)
        and not response.body
    ):
        return problem_response(request, response.status)
    return response
