"""Reports and a dashboard built in Chromium: the charts draw (uPlot loaded on the chart
pages only), widgets are added, resized, reordered and removed, and a dashboard assigned
to a role becomes that role's start page."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Page, expect
from test_reports import _seed, _users
from ui_helpers import click_menu

from herald.cli.browser import VIEWPORT, chromium
from herald.cli.demo import DEMO_USERS

UTC = dt.UTC
pytestmark = [
    pytest.mark.clock(dt.datetime(2026, 11, 20, 10, tzinfo=UTC)),
    pytest.mark.timeout(300),
]
TIMEOUT = 10_000


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    async with chromium() as found:
        yield found


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport=VIEWPORT, locale="uk-UA")
    context.set_default_timeout(TIMEOUT)
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    opened.on("pageerror", lambda e: errors.append(str(e)))
    yield opened
    await context.close()
    assert [e for e in errors if "Content Security Policy" in e or "Error" in e] == []


async def log_in(page: Page, url: str, role: str) -> None:
    user = next(d for d in DEMO_USERS if d.role == role)
    await page.goto(url + "/ui/login")
    await page.fill("#login", user.login)
    await page.fill("#password", user.password)
    await page.click("button[type=submit]")
    await expect(page.locator(".topbar")).to_be_visible()


async def widget_titles(page: Page) -> list[str]:
    titles: list[str] = await page.locator(".dash-grid .widget h2").all_inner_texts()
    return titles


async def test_reports_and_a_dashboard_built_in_the_browser(
    client, demo_users, app_conn, page: Page
) -> None:
    u1, u2 = await _users(app_conn, demo_users)
    await _seed(app_conn, u1, u2)
    url = str(client.make_url("")).rstrip("/")
    await log_in(page, url, "supervisor")
    assert await page.evaluate("typeof window.uPlot") == "undefined"  # not on other pages
    await click_menu(page, "reports")  # a boosted navigation
    await expect(page.locator("#report-filters")).to_be_visible()
    await page.select_option("select[name=group_by]", "channel")
    await expect(page.locator(".chart .uplot canvas").first).to_be_visible()
    await expect(page.locator("table.report-table")).to_contain_text("Сайт")
    await page.click(".tabs >> text=Команда")
    await expect(page.locator("text=Залишок зараз і його вік")).to_be_visible()
    await expect(page.locator(".chart .uplot canvas").first).to_be_visible()

    # A dashboard of one's own
    await click_menu(page, "dashboards")
    await page.fill("input[name=name]", "Мій день")
    await page.click("text=Створити")
    await expect(page.locator("h1")).to_contain_text("Мій день")
    await expect(page.locator(".dash-grid .widget")).to_have_count(3)  # the starter widgets
    form = page.locator("#add-widget")
    await form.locator("select[name=kind]").select_option("bar")
    await form.locator("select[name=report]").select_option("cases")
    await form.locator("select[name=metric]").select_option("created")
    await form.locator("select[name=period]").select_option("month")
    await form.locator("select[name=group_by]").select_option("channel")
    await form.locator("input[name=title]").fill("Звернення за каналами")
    await form.locator("button[type=submit]").click()
    await expect(page.locator(".dash-grid .widget")).to_have_count(4)
    bar = page.locator(".widget[data-kind=bar]")
    await expect(bar.locator(".uplot canvas")).to_be_visible()
    await form.locator("select[name=kind]").select_option("number")
    await form.locator("select[name=report]").select_option("backlog")
    await form.locator("select[name=metric]").select_option("open_cases")
    await form.locator("input[name=title]").fill("Відкриті зараз")
    await form.locator("button[type=submit]").click()
    number = page.locator(".widget[data-kind=number]").last
    await expect(number.locator(".widget-number")).to_have_text("2")  # c3 and c5 open
    # Resize, reorder, remove
    await expect(bar).to_have_class("panel widget w-2 h-1")
    await bar.locator("button[aria-label=Ширше]").click()
    await expect(page.locator(".widget[data-kind=bar]")).to_have_class("panel widget w-3 h-1")
    await page.locator(".widget[data-kind=bar] button[aria-label=Раніше]").click()
    titles = await widget_titles(page)
    assert titles.index("Звернення за каналами") == 2
    first = page.locator(".dash-grid .widget").first
    await first.locator("button[aria-label=Видалити]").click()
    await expect(page.locator(".dash-grid .widget")).to_have_count(4)
    await page.reload()
    assert (await widget_titles(page))[1:] == [
        "Звернення за каналами",
        "Вирішено",
        "Відкриті зараз",
    ]
    await expect(page.locator(".widget[data-kind=bar]")).to_have_class("panel widget w-3 h-1")
    board_url = page.url

    # An administrator makes it the supervisors' start page
    await page.click("text=Вийти")
    await log_in(page, url, "admin")
    await page.goto(board_url)
    await page.select_option("select[name=role_code]", "supervisor")
    await page.click("text=Призначити")
    await expect(page.locator("h1 .tag")).to_contain_text("Супервізор")
    await page.click("text=Вийти")
    await log_in(page, url, "supervisor")
    await expect(page.locator("h1")).to_contain_text("Мій день")
    await expect(page.locator(".widget[data-kind=bar] .uplot canvas")).to_be_visible()
