"""Login, logout, the current user and their password."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import asyncpg
import msgspec
from aiohttp import web

from admin_api import inputs
from admin_api.routing import AUTHENTICATED, PUBLIC, EndpointTable, json_response
from admin_api.security import SESSION_COOKIE, actor, principal
from admin_api.typedefs import DB, REQUEST_ID, SETTINGS, TOKEN
from crm import users
from crm.login_guard import LoginPolicy
from crm.users import PasswordPolicy
from herald.settings import Settings

endpoints = EndpointTable("auth")

DEVICE_COOKIE = "herald_device"

Login = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Secret = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    login: Login
    password: Secret


class Me(msgspec.Struct):
    id: int
    login: str
    full_name: str
    roles: list[str]
    permissions: list[str]


class LoginResponse(msgspec.Struct):
    token: str
    token_type: str
    expires_in: int
    user: Me


class PasswordChange(msgspec.Struct, forbid_unknown_fields=True):
    current_password: Secret
    new_password: Secret


def _me(p: users.Principal) -> Me:
    return Me(
        id=p.user_id,
        login=p.login,
        full_name=p.full_name,
        roles=sorted(p.roles),
        permissions=sorted(p.permissions),
    )


def password_policy(request: web.Request) -> PasswordPolicy:
    return PasswordPolicy(min_length=request.app[SETTINGS].password_min_length)


def login_policy(settings: Settings) -> LoginPolicy:
    return LoginPolicy(
        max_failures=settings.login_max_failures,
        lockout_seconds=settings.login_lockout_seconds,
        lockout_max_seconds=settings.login_lockout_max_seconds,
        address_free_failures=settings.login_address_free_failures,
        address_window_seconds=settings.login_address_window_seconds,
        address_max_delay_seconds=settings.login_address_max_delay_seconds,
        device_days=settings.login_device_days,
    )


async def log_in(
    request: web.Request, conn: asyncpg.Connection, login_name: str, password: str
) -> tuple[str, users.Principal, str]:
    """``users.login`` for this request: its address, agent and known-device cookie (the
    API's login and the web UI's login page alike)."""
    settings = request.app[SETTINGS]
    return await users.login(
        conn,
        login_policy(settings),
        login_name=login_name,
        password=password,
        ttl=dt.timedelta(seconds=settings.session_ttl_seconds),
        request_id=request.get(REQUEST_ID),
        client_ip=request.remote,
        user_agent=inputs.header_text(request, "User-Agent"),
        device_token=request.cookies.get(DEVICE_COOKIE),
    )


@endpoints.post(
    "/api/v1/auth/login",
    permission=PUBLIC,
    body=LoginRequest,
    response=LoginResponse,
    errors=(400, 401, 423, 429),
)
async def login(request: web.Request, body: LoginRequest) -> web.Response:
    """Log in with login and password; returns a bearer token (also set as a cookie).

    Also sets the ``herald_device`` cookie: attempts from a browser its user has logged in
    from are not bound by the account's lock-out, which only an unknown device's failures
    set (see the README, Authentication). 429 with Retry-After when the client's address
    failed too often; 423 while the account (or this device) is locked.
    """
    settings = request.app[SETTINGS]
    async with request.app[DB].acquire() as conn:
        token, who, device = await log_in(request, conn, body.login, body.password)
    response = json_response(
        LoginResponse(
            token=token, token_type="Bearer", expires_in=settings.session_ttl_seconds, user=_me(who)
        )
    )
    secure = settings.environment == "production"
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.session_ttl_seconds,
        httponly=True,
        samesite="Strict",
        path="/",
        secure=secure,
    )
    response.set_cookie(
        DEVICE_COOKIE,
        device,
        max_age=settings.login_device_days * 86_400,
        httponly=True,
        samesite="Strict",
        path="/api/v1/auth/login",
        secure=secure,
    )
    return response


@endpoints.post("/api/v1/auth/logout", permission=AUTHENTICATED, status=204)
async def logout(request: web.Request) -> web.Response:
    """End the current session."""
    async with request.app[DB].acquire() as conn:
        await users.logout(conn, actor(request), request[TOKEN])
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


@endpoints.get("/api/v1/auth/me", permission=AUTHENTICATED, response=Me)
async def me(request: web.Request) -> Me:
    """The logged-in user, their roles and effective permissions."""
    return _me(principal(request))


@endpoints.post(
    "/api/v1/auth/password",
    permission=AUTHENTICATED,
    body=PasswordChange,
    status=204,
    errors=(400,),
)
async def change_password(request: web.Request, body: PasswordChange) -> None:
    """Change one's own password; other sessions of the user are ended."""
    async with request.app[DB].acquire() as conn:
        await users.set_password(
            conn,
            actor(request),
            password_policy(request),
            principal(request).user_id,
            body.new_password,
            current_password=body.current_password,
            keep_session=users.session_key(request[TOKEN]),
        )
