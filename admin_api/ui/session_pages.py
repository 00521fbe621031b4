"""Logging in and out, one's own account (password, language), and the start page."""

from __future__ import annotations

import datetime as dt

import msgspec
from aiohttp import web

from admin_api.routing import AUTHENTICATED, PUBLIC, EndpointTable
from admin_api.security import SESSION_COOKIE, actor, principal
from admin_api.typedefs import DB, SETTINGS, TOKEN
from admin_api.ui import forms, i18n, menu
from admin_api.ui.guard import safe_next
from admin_api.ui.rendering import LANGUAGE, LANGUAGE_COOKIE, render
from admin_api.ui.rendering import language as request_language
from admin_api.views.auth import DEVICE_COOKIE, log_in
from crm import ui_prefs, users
from crm.reports import dashboards
from crm.users import PasswordPolicy, Principal
from herald.errors import (
    AccountLocked,
    AuthenticationFailed,
    InvalidInput,
    TooManyAttempts,
)

endpoints = EndpointTable("ui")

YEAR = 365 * 24 * 3600


class LoginForm(msgspec.Struct):
    login: str = ""
    password: str = ""
    next: str = "/ui/"


class PasswordForm(msgspec.Struct):
    current_password: str = ""
    new_password: str = ""


class LanguageForm(msgspec.Struct):
    language: str
    next: str = "/ui/"


def _language_cookie(response: web.StreamResponse, language: str) -> None:
    response.set_cookie(
        LANGUAGE_COOKIE, language, max_age=YEAR, path="/", samesite="Strict", httponly=True
    )


@endpoints.get("/ui/login", permission=PUBLIC, response=str, media_type="text/html")
async def login_page(request: web.Request) -> web.Response:
    """The login form; ``?next=`` is where to go afterwards, ``?lang=`` its language."""
    lang = request.query.get("lang")
    if lang in ui_prefs.LANGUAGES:
        request[LANGUAGE] = lang
    response = await render(
        request,
        "login.html",
        {"next": safe_next(request.query.get("next")), "error": None, "login_name": ""},
    )
    if lang in ui_prefs.LANGUAGES:
        _language_cookie(response, lang)
    response.headers["Vary"] = "Accept-Language, Cookie"
    return response


def _lockout_message(error: AccountLocked, lang: str) -> str:
    until = i18n.Formats(lang).datetime(dt.datetime.fromisoformat(error.until))
    return i18n.translations(lang).gettext(
        "Too many failed attempts: the account is locked until %(time)s."
    ) % {"time": until}


@endpoints.post(
    "/ui/login", permission=PUBLIC, response=str, media_type="text/html", errors=(401, 423, 429)
)
async def login_submit(request: web.Request) -> web.Response:
    """Check the login form; on success set the session cookie and go to ``next``."""
    body = await forms.form(request, LoginForm)
    settings = request.app[SETTINGS]
    next_path = safe_next(body.next)
    lang = await request_language(request)
    catalogue = i18n.translations(lang)
    error, status, headers = None, 401, {}
    try:
        async with request.app[DB].acquire() as conn:
            token, who, device = await log_in(request, conn, body.login, body.password)
            stored = await ui_prefs.language_of(conn, who.user_id)
    except AccountLocked as locked:
        error, status = _lockout_message(locked, lang), 423
    except TooManyAttempts as throttled:
        error, status = (
            catalogue.gettext(
                "Too many failed attempts from this computer: try again in %(seconds)s s."
            )
            % {"seconds": throttled.retry_after},
            429,
        )
        headers = {"Retry-After": str(throttled.retry_after)}
    except AuthenticationFailed:
        error = catalogue.gettext("The login or the password is wrong.")
    if error is not None:
        return await render(
            request,
            "login.html",
            {"next": next_path, "error": error, "login_name": body.login},
            status=status,
            headers=headers,
        )
    if next_path == "/ui/":
        next_path = await _home(request, who)
    response = web.Response(status=303, headers={"Location": next_path})
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.session_ttl_seconds,
        httponly=True,
        samesite="Strict",
        path="/",
        secure=settings.environment == "production",
    )
    _language_cookie(response, stored)
    # This browser becomes a known device of the user's (see the README, Authentication).
    response.set_cookie(
        DEVICE_COOKIE,
        device,
        max_age=settings.login_device_days * 86_400,
        httponly=True,
        samesite="Strict",
        path="/ui/login",
        secure=settings.environment == "production",
    )
    return response


@endpoints.post("/ui/logout", permission=AUTHENTICATED, response=str, media_type="text/html")
async def logout(request: web.Request) -> web.Response:
    """End the session and go back to the login page."""
    async with request.app[DB].acquire() as conn:
        await users.logout(conn, actor(request), request[TOKEN])
    response = web.Response(status=303, headers={"Location": "/ui/login"})
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


@endpoints.get("/ui/", permission=AUTHENTICATED, response=str, media_type="text/html")
async def start(request: web.Request) -> web.Response:
    """The start page: the dashboard an administrator assigned to the person's role, or
    the first page of their menu."""
    raise web.HTTPSeeOther(await _home(request, principal(request)))


async def _home(request: web.Request, who: Principal) -> str:
    if "reports.own" in who.permissions:
        async with request.app[DB].acquire() as conn:
            board = await dashboards.start_page(conn, who.roles)
        if board is not None:
            return f"/ui/dashboards/{board}"
    return menu.home_for(who.permissions)


async def _account(
    request: web.Request, message: str = "", level: str = "ok", status: int = 200
) -> web.Response:
    return await render(
        request,
        "account.html",
        {
            "message": message,
            "level": level,
            "min_length": request.app[SETTINGS].password_min_length,
        },
        status=status,
    )


@endpoints.get("/ui/account", permission=AUTHENTICATED, response=str, media_type="text/html")
async def account(request: web.Request) -> web.Response:
    """One's own account: roles, password change."""
    return await _account(request)


@endpoints.post(
    "/ui/account/password",
    permission=AUTHENTICATED,
    response=str,
    media_type="text/html",
    errors=(400,),
)
async def change_password(request: web.Request) -> web.Response:
    """Change one's own password; the person's other sessions end."""
    body = await forms.form(request, PasswordForm)
    catalogue = i18n.translations(await request_language(request))
    try:
        async with request.app[DB].acquire() as conn:
            await users.set_password(
                conn,
                actor(request),
                PasswordPolicy(min_length=request.app[SETTINGS].password_min_length),
                principal(request).user_id,
                body.new_password,
                current_password=body.current_password,
                keep_session=users.session_key(request[TOKEN]),
            )
    except (InvalidInput, AuthenticationFailed) as error:
        return await _account(
            request,
            catalogue.gettext("The password was not changed: %(why)s") % {"why": str(error)},
            "error",
            400,
        )
    return await _account(request, catalogue.gettext("The password is changed."))


@endpoints.post(
    "/ui/language", permission=AUTHENTICATED, response=str, media_type="text/html", errors=(400,)
)
async def set_language(request: web.Request) -> web.Response:
    """Switch one's UI language (stored for the user) and go back to the page."""
    body = await forms.form(request, LanguageForm)
    async with request.app[DB].acquire() as conn:
        lang = await ui_prefs.set_language(
            conn, actor(request), principal(request).user_id, body.language
        )
    response = web.Response(status=303, headers={"Location": safe_next(body.next)})
    _language_cookie(response, lang)
    return response
