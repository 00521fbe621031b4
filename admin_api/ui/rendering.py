"""Rendering pages: one jinja2 environment per language, autoescaping everything.

``render(request, "card.html", ctx)`` picks the person's language (stored per user; a
cookie before login), and gives every template ``user``, ``menu``, ``csrf_token``,
``can(permission)``, the language and the formatting filters of that language.
"""

from __future__ import annotations

import gettext
import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from admin_api.security import SESSION_COOKIE
from admin_api.typedefs import DB, PRINCIPAL
from admin_api.ui import i18n, labels, menu, texts
from crm import ui_prefs

TEMPLATES_DIR = Path(__file__).parent / "templates"
LANGUAGE_COOKIE = "herald_lang"
LANGUAGE = web.RequestKey("ui_language", str)


def hms(seconds: float | None) -> str:
    """A duration as H:MM:SS (hours not wrapped into days), "−" before an overdue one; the
    same format as the SLA countdown of herald.js."""
    if seconds is None:
        return ""
    sign = "\u2212" if seconds < 0 else ""
    s = abs(round(seconds))
    return f"{sign}{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _translated(
    catalogue: gettext.NullTranslations, names: Mapping[str, str]
) -> Callable[[str], str]:
    """A code's name in the catalogue's language (the code itself when it has none)."""
    return lambda code: catalogue.gettext(names.get(code, code))


def make_environment(language: str, static_url: Callable[[str], str]) -> jinja2.Environment:
    """The environment of one language: gettext installed, filters formatting for it."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,  # every template, whatever its name
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    catalogue = i18n.translations(language)
    env.install_gettext_translations(  # type: ignore[attr-defined]  # added by jinja2.ext.i18n
        catalogue, newstyle=True
    )
    formats = i18n.Formats(language)
    env.filters.update(
        dt=formats.datetime,
        date=formats.date,
        long_date=formats.long_date,
        money=formats.money,
        num=formats.number,
        hms=hms,
    )
    env.globals.update(
        language=language,
        language_names=i18n.LANGUAGE_NAMES,
        static=static_url,
        role_name=_translated(catalogue, menu.ROLE_NAMES),
        label=_translated(catalogue, labels.LABELS),
        refusal=_translated(catalogue, labels.REFUSALS),
        error_text=lambda error: texts.error_text(error, catalogue.gettext),
        tl_title=lambda item: texts.timeline_title(item, catalogue.gettext, formats),
        generated=lambda text: texts.generated(text, catalogue.gettext),
    )
    return env


class Renderer:
    """The environments of all languages, built once at start-up."""

    def __init__(self, static_url: Callable[[str], str]) -> None:
        self.environments = {
            lang: make_environment(lang, static_url) for lang in ui_prefs.LANGUAGES
        }

    def template(self, language: str, name: str) -> jinja2.Template:
        return self.environments[i18n.normalise(language)].get_template(name)


RENDERER = web.AppKey("ui_renderer", Renderer)


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: unforgeable without the (HttpOnly) session token."""
    return hashlib.sha256(b"herald-csrf\0" + session_token.encode()).hexdigest()[:40]


def session_cookie(request: web.Request) -> str | None:
    return request.cookies.get(SESSION_COOKIE) or None


async def language(request: web.Request) -> str:
    """The person's language: stored per user once logged in, else the login page's
    choice (a cookie), else what the browser asks for, else Ukrainian."""
    if LANGUAGE in request:
        return request[LANGUAGE]
    found = None
    who = request.get(PRINCIPAL)
    if who is not None:
        async with request.app[DB].acquire() as conn:
            found = await ui_prefs.language_of(conn, who.user_id)
    # Nobody logged in: the language chosen on the login page (its cookie), else the
    # browser's Accept-Language, else Ukrainian.
    lang = i18n.normalise(
        found
        or request.cookies.get(LANGUAGE_COOKIE)
        or i18n.from_accept_language(request.headers.get("Accept-Language"))
    )
    request[LANGUAGE] = lang
    return lang


async def context(request: web.Request) -> dict[str, Any]:
    """What every template may use."""
    who = request.get(PRINCIPAL)
    permissions = who.permissions if who is not None else frozenset()
    token = session_cookie(request)
    await language(request)
    return {
        "user": who,
        "menu": menu.top_bar(permissions, request.path),
        "can": permissions.__contains__,
        "csrf_token": csrf_token(token) if token else "",
        "current_path": request.path_qs,
        "is_htmx": request.headers.get("HX-Request") == "true",
    }


async def render_text(request: web.Request, name: str, ctx: Mapping[str, Any] | None = None) -> str:
    base = await context(request)
    base.update(ctx or {})
    return request.app[RENDERER].template(await language(request), name).render(base)


async def render(
    request: web.Request,
    name: str,
    ctx: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """The template rendered as an HTML response."""
    text = await render_text(request, name, ctx)
    return web.Response(
        text=text, status=status, content_type="text/html", headers=dict(headers or {})
    )
