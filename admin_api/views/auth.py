"""Login, logout, the current user and their password."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec
from aiohttp import web

from admin_api.routing import AUTHENTICATED, PUBLIC, EndpointTable, json_response
from admin_api.security import SESSION_COOKIE, actor, principal
from admin_api.typedefs import DB, REQUEST_ID, SETTINGS, TOKEN
from crm import users
from crm.users import LockoutPolicy, PasswordPolicy

endpoints = EndpointTable("auth")

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
    return Me(id=p.user_id, login=p.login, full_name=p.full_name, roles=sorted(p.roles),
              permissions=sorted(p.permissions))


def password_policy(request: web.Request) -> PasswordPolicy:
    return PasswordPolicy(min_length=request.app[SETTINGS].password_min_length)


@endpoints.post("/api/v1/auth/login", permission=PUBLIC, body=LoginRequest,
                response=LoginResponse, errors=(400, 401, 423))
async def login(request: web.Request, body: LoginRequest) -> web.Response:
    """Log in with login and password; returns a bearer token (also set as a cookie)."""
    settings = request.app[SETTINGS]
    ttl = dt.timedelta(seconds=settings.session_ttl_seconds)
    async with request.app[DB].acquire() as conn:
        token, who = await users.login(
            conn, LockoutPolicy(settings.login_max_failures, settings.login_lockout_seconds),
            login_name=body.login, password=body.password, ttl=ttl,
            request_id=request.get(REQUEST_ID), client_ip=request.remote,
            user_agent=request.headers.get("User-Agent"))
    response = json_response(LoginResponse(token=token, token_type="Bearer",
                                           expires_in=settings.session_ttl_seconds, user=_me(who)))
    response.set_cookie(SESSION_COOKIE, token, max_age=settings.session_ttl_seconds,
                        httponly=True, samesite="Strict", path="/",
                        secure=settings.environment == "production")
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


@endpoints.post("/api/v1/auth/password", permission=AUTHENTICATED, body=PasswordChange,
                status=204, errors=(400,))
async def change_password(request: web.Request, body: PasswordChange) -> None:
    """Change one's own password; other sessions of the user are ended."""
    async with request.app[DB].acquire() as conn:
        await users.set_password(conn, actor(request), password_policy(request),
                                 principal(request).user_id, body.new_password,
                                 current_password=body.current_password,
                                 keep_session=users.session_key(request[TOKEN]))
