"""Authentication and authorisation of every request, from the route's declared permission."""

from __future__ import annotations

import datetime as dt
import hmac
from typing import Any

from aiohttp import web

from admin_api.problems import problem_response
from admin_api.routing import AUTHENTICATED, PRODUCER, PROVIDER, PUBLIC, endpoint_of
from admin_api.typedefs import DB, PRINCIPAL, REQUEST_ID, SETTINGS, TOKEN
from crm.users import Principal, resolve_session
from dispatcher.realtime.producers import Producer, authenticate
from herald import audit
from herald.audit import Actor
from herald.errors import InvalidInput

SESSION_COOKIE = "herald_session"
PRODUCER_KEY = web.RequestKey("producer", Producer)


def authorization_bearer(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if any."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def bearer_token(request: web.Request) -> str | None:
    """The session token from ``Authorization: Bearer``, else from the session cookie."""
    return authorization_bearer(request) or request.cookies.get(SESSION_COOKIE) or None


def principal(request: web.Request) -> Principal:
    """The logged-in user of a request that passed the security middleware."""
    return request[PRINCIPAL]


def producer(request: web.Request) -> Producer:
    """The event producer of a request to a producer route (its key was checked)."""
    return request[PRODUCER_KEY]


def actor(request: web.Request) -> Actor:
    """The audit actor of the request: its user and request id."""
    return principal(request).actor(request.get(REQUEST_ID))


@web.middleware
async def security_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """401 without a valid session, 403 without the route's permission."""
    route = request.match_info.route
    declared = endpoint_of(route.handler)
    if declared is None:
        # Router-made responses (404, 405) have no declaration and need no session.
        if request.match_info.http_exception is not None:
            return await handler(request)
        return problem_response(
            request, 500, code="undeclared-route", detail="this route declares no permission"
        )
    if declared.permission == PUBLIC:
        return await handler(request)
    token = bearer_token(request)
    if declared.permission == PROVIDER:
        expected = request.app[SETTINGS].provider_api_token
        if token is None or not hmac.compare_digest(token.encode(), expected.encode()):
            return problem_response(
                request,
                401,
                code="provider-token-invalid",
                detail="send the provider API token as a bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await handler(request)
    if declared.permission == PRODUCER:
        # A producer key travels only in the header, never in a browser's cookie.
        return await _producer(request, handler, authorization_bearer(request))
    if token is None:
        return problem_response(
            request,
            401,
            code="authentication-required",
            detail="log in first: send Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    settings = request.app[SETTINGS]
    async with request.app[DB].acquire() as conn:
        found = await resolve_session(
            conn, token, dt.timedelta(seconds=settings.session_ttl_seconds)
        )
    if found is None:
        return problem_response(
            request,
            401,
            code="session-invalid",
            detail="the session has expired or was ended; log in again",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    if declared.permission != AUTHENTICATED and declared.permission not in found.permissions:
        return problem_response(
            request,
            403,
            code="permission-denied",
            detail=f"your roles do not grant {declared.permission!r}",
        )
    request[PRINCIPAL] = found
    request[TOKEN] = token
    return await handler(request)


async def _producer(request: web.Request, handler: Any, key: str | None) -> web.StreamResponse:
    """401 without a known producer key, 403 for a deactivated producer."""
    found = None
    if key is not None:
        async with request.app[DB].acquire() as conn:
            found = await authenticate(conn, key)
    if found is None:
        return problem_response(
            request,
            401,
            code="producer-key-invalid",
            detail="send the producer's API key as a bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not found.is_active:
        return problem_response(
            request,
            403,
            code="producer-deactivated",
            detail=f"producer {found.name!r} is deactivated",
        )
    request[PRODUCER_KEY] = found
    return await handler(request)


async def journal_attempts(request: web.Request, error: InvalidInput) -> None:
    """Journal the attacks among refused input (``error.attempts``): who sent what, where.

    The middleware below does it for errors a view raises; a page that catches InvalidInput
    to show the form again calls it itself.
    """
    if not error.attempts:
        return
    found = request.get(PRINCIPAL)
    who = found.actor(request.get(REQUEST_ID)) if found else Actor("anonymous", None, None)
    async with request.app[DB].acquire() as conn:
        await audit.record_attempts(conn, who, error.attempts)


@web.middleware
async def attempts_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Input refused as an attack (a sandbox escape, SQL in a segment) goes into the journal."""
    try:
        return await handler(request)
    except InvalidInput as error:
        await journal_attempts(request, error)
        raise
