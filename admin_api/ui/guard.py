"""The web UI's guard: security headers, CSRF, and what a page does on 401, 403 or an error.

- Every response carries ``Content-Security-Policy`` (scripts and styles only from our own
  static files, no inline script, no eval), ``X-Frame-Options: DENY``, ``nosniff`` and
  ``Referrer-Policy: same-origin``.
- CSRF: a state-changing request whose ``Origin`` is another site is refused on every route
  (the session cookie is also ``SameSite=Strict``); a state-changing page request that
  authenticates by the session cookie must carry the session's CSRF token (header
  ``X-CSRF-Token``, sent by htmx, or the form field ``csrf_token``), and the login form
  must come from our own origin.
- A page that gets a 401 sends the person to the login page and back afterwards (htmx
  requests get ``HX-Redirect``); a 403 or a domain error renders as HTML, not JSON.
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from admin_api.problems import problem_response
from admin_api.routing import PUBLIC, Endpoint, endpoint_of
from admin_api.security import authorization_bearer
from admin_api.typedefs import SETTINGS
from admin_api.ui.rendering import csrf_token, render, session_cookie
from herald.errors import HeraldError, NotFound

PAGE_TAG = "ui"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
LOGIN_PATH = "/ui/login"


def is_page(declared: Endpoint | None) -> bool:
    return declared is not None and PAGE_TAG in declared.tags


def safe_next(value: str | None) -> str:
    """A local path to return to after login; anything else (another site) becomes the home."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/ui/"
    return value


def _own_origin(request: web.Request, origin: str) -> bool:
    """Whether ``Origin`` is this server (as the browser addressed it) or its public URL."""
    host = urlsplit(origin).netloc.lower()
    public = urlsplit(request.app[SETTINGS].public_base_url).netloc.lower()
    return bool(host) and host in {request.host.lower(), public}


class CsrfRefused(web.HTTPForbidden):
    pass


async def _check_csrf(request: web.Request, declared: Endpoint | None) -> str | None:
    """Why this state-changing request is refused, or None when it may go on."""
    origin = request.headers.get("Origin")
    cookie = session_cookie(request)
    if (
        origin is not None
        and origin != "null"
        and not _own_origin(request, origin)
        and (cookie is not None or is_page(declared))
    ):
        return "the request comes from another site"
    if not is_page(declared) or authorization_bearer(request) is not None:
        return None
    if declared is not None and declared.permission == PUBLIC:
        # The login form: no session yet, so no token; it must come from our own page.
        if origin is None or not _own_origin(request, origin):
            return "the form was not sent from this site"
        return None
    if cookie is None:
        return None  # the security middleware answers 401
    sent = request.headers.get("X-CSRF-Token")
    if sent is None and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        value = (await request.post()).get("csrf_token")
        sent = value if isinstance(value, str) else None
    if sent is None or not hmac.compare_digest(sent, csrf_token(cookie)):
        return "the form's security token is missing or out of date; reload the page"
    return None


def _login_redirect(request: web.Request) -> web.Response:
    if request.headers.get("HX-Request") == "true":
        # Back to the page the person was on, not to the fragment that failed.
        current = urlsplit(request.headers.get("HX-Current-URL", "")).path or "/ui/"
        target = f"{LOGIN_PATH}?next={quote(safe_next(current))}"
        return web.Response(status=200, headers={"HX-Redirect": target})
    target = f"{LOGIN_PATH}?next={quote(safe_next(request.path_qs))}"
    return web.Response(status=303, headers={"Location": target})


async def _error_page(
    request: web.Request, status: int, message: str = "", error: HeraldError | None = None
) -> web.Response:
    headers = {}
    template = "error.html"
    if request.headers.get("HX-Request") == "true":
        # A fragment's failure shows in the page's message area, whatever the target was.
        headers = {"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"}
        template = "_flash.html"
    # The real status even for htmx: the page's htmx config swaps 4xx/5xx answers too.
    return await render(
        request,
        template,
        {"status": status, "message": message, "error": error, "level": "error"},
        status=status,
        headers=headers,
    )


@web.middleware
async def ui_guard(request: web.Request, handler: Any) -> web.StreamResponse:
    """CSRF before the handler; HTML answers and security headers after it."""
    declared = endpoint_of(request.match_info.route.handler)
    if request.method not in SAFE_METHODS:
        refused = await _check_csrf(request, declared)
        if refused is not None:
            response: web.StreamResponse
            if is_page(declared):
                response = web.Response(status=403, text=refused, content_type="text/plain")
            else:  # an API client gets its errors as RFC 9457 problems, this one too
                response = problem_response(request, 403, code="csrf-refused", detail=refused)
            response.headers.update(SECURITY_HEADERS)
            return response
    page = is_page(declared)
    try:
        response = await handler(request)
    except NotFound as error:
        if not page:
            raise
        response = await _error_page(request, 404, error=error)
    except HeraldError as error:
        if not page:
            raise
        response = await _error_page(request, 400, error=error)
    if page and response.status == 401 and declared is not None and declared.permission != PUBLIC:
        response = _login_redirect(request)
    elif page and response.status == 403:
        response = await _error_page(request, 403, "")
    if not response.prepared:
        for name, value in SECURITY_HEADERS.items():
            # A view's own stricter choice stays (the unsubscribe page: no referrer at all).
            response.headers.setdefault(name, value)
    return response
