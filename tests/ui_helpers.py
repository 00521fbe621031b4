"""Helpers of the web UI's tests: logging in through the login form, the CSRF token."""

from __future__ import annotations

import re
from typing import Any

from herald.cli.demo import DEMO_USERS

_TOKEN = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


def origin(client: Any) -> str:
    """The origin the browser would send for pages of this test server."""
    return str(client.make_url("")).rstrip("/")


def demo(role: str) -> Any:
    return next(d for d in DEMO_USERS if d.role == role)


async def ui_login(client: Any, role: str) -> str:
    """Log the demo user of ``role`` in through the form (the session cookie stays in the
    client's jar); return the page's CSRF token."""
    user = demo(role)
    client.session.cookie_jar.clear()
    response = await client.post(
        "/ui/login",
        data={"login": user.login, "password": user.password},
        headers={"Origin": origin(client)},
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    page = await client.get("/ui/account")
    assert page.status == 200
    found = _TOKEN.search(await page.text())
    assert found, "no CSRF token on the page"
    return found.group(1)


async def post_form(client: Any, path: str, data: dict[str, str], token: str, **kw: Any) -> Any:
    """A form post as the page's htmx makes it: own origin, CSRF header."""
    headers = {"Origin": origin(client), "X-CSRF-Token": token, "HX-Request": "true"}
    return await client.post(path, data=data, headers=headers, **kw)


def export_form(html: str, form_id: str) -> dict[str, str]:
    """The hidden fields of a list's Export form (``_export_bar.html``): kind, filters and
    CSRF token, as the browser would post them."""
    form = re.search(rf'<form[^>]*id="{form_id}"[^>]*>(.*?)</form>', html, re.S)
    assert form, f"no export form #{form_id} on the page"
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form.group(1))
    return {name: value.replace("&#43;", "+").replace("&amp;", "&") for name, value in fields}


async def click_menu(page: Any, key: str) -> None:
    """Click a top-bar entry as a person would: open its drop-down first when a long menu
    folded it into one (admin_api/ui/menu.py, top_bar)."""
    link = page.locator(f"nav.menu a[data-menu={key}]")
    group = page.locator(f"nav.menu details.menu-group:has(a[data-menu={key}])")
    if await group.count() and not await link.is_visible():
        await group.locator("summary").click()
    await link.click()
