"""The login page's language in Chromium: negotiated from the browser's Accept-Language
(Ukrainian by default), a visible switch remembered in a cookie, the user's stored
preference after login; and date inputs that read dd.mm.yyyy in a Ukrainian browser."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Page, expect
from test_ui_browser import base, log_in

from herald.cli.browser import VIEWPORT, chromium

TIMEOUT = 10_000


@pytest.fixture(scope="module")
async def chromium_browser() -> AsyncIterator[Any]:
    async with chromium() as found:
        yield found


async def _context_page(browser: Any, locale: str) -> tuple[Any, Page]:
    context = await browser.new_context(viewport=VIEWPORT, locale=locale)
    context.set_default_timeout(TIMEOUT)
    return context, await context.new_page()


async def test_login_language_from_browser_switch_cookie_and_stored(
    client, demo_users, chromium_browser
) -> None:
    url = base(client)
    # An English browser gets the English login page; a Ukrainian or Polish one Ukrainian
    context, page = await _context_page(chromium_browser, "en-US")
    try:
        await page.goto(url + "/ui/login")
        await expect(page.locator("button[type=submit]")).to_have_text("Log in")
        await expect(page.locator("html")).to_have_attribute("lang", "en")
        # The switch on the login page: Ukrainian, remembered in a cookie over the browser's wish
        await page.click(".lang-choice a[lang=uk]")
        await expect(page.locator("button[type=submit]")).to_have_text("Увійти")
        await page.goto(url + "/ui/login")
        await expect(page.locator("button[type=submit]")).to_have_text("Увійти")
        cookies = {c["name"]: c["value"] for c in await context.cookies()}
        assert cookies.get("herald_lang") == "uk", cookies
        # After login the user's stored preference wins (operator.cc: Ukrainian, stored);
        # switched to English on the login page, the stored Ukrainian still wins after login
        await page.click(".lang-choice a[lang=en]")
        await expect(page.locator("button[type=submit]")).to_have_text("Log in")
        await log_in(page, url, "operator_cc")
        await expect(page.locator("h1")).to_have_text("Пошук клієнтів")
    finally:
        await context.close()
    for locale in ("uk-UA", "pl-PL"):
        context, page = await _context_page(chromium_browser, locale)
        try:
            await page.goto(url + "/ui/login")
            await expect(page.locator("button[type=submit]")).to_have_text("Увійти")
        finally:
            await context.close()


async def test_date_inputs_read_day_month_year(chromium_browser) -> None:
    context, page = await _context_page(chromium_browser, "uk-UA")
    try:
        await page.set_content('<input id="d" type="date">')
        # The field's parts follow the browser's locale: typed as a Ukrainian writes a date
        # (day, month, year), it is the 15th of April; in mm/dd/yyyy it would not be
        await page.focus("#d")
        await page.keyboard.type("15042026")
        assert await page.locator("#d").input_value() == "2026-04-15"
    finally:
        await context.close()
