"""The marketer's campaign and trigger pages for ``herald screenshots``: the list, a new
campaign's form with its channel chain, a campaign's live page (funnel, throughput
chart, recipients) and one client's drill-down, the trigger rules with the producers
and the recent events, a rule's form."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

# Each shot waits for what it shows (not for an idle network: the tab's stream stays open).
Shot = Callable[..., Awaitable[None]]
LogIn = Callable[[Any, str, str], Awaitable[None]]


async def a_campaign(conn: asyncpg.Connection) -> int | None:
    """The campaign worth showing: the latest that sent something, else the latest."""
    found: int | None = await conn.fetchval(
        "SELECT id FROM campaigns ORDER BY (launched_at IS NOT NULL) DESC, "
        "coalesce(audience_size, 0) DESC, id DESC LIMIT 1"
    )
    return found


async def campaign_pages(
    browser: Any,
    url: str,
    shot: Shot,
    log_in: LogIn,
    *,
    campaign_id: int | None,
    viewport: dict[str, int],
) -> None:
    context = await browser.new_context(viewport=viewport, locale="uk-UA")
    page = await context.new_page()
    await log_in(page, url, "marketer")
    await page.goto(url + "/ui/campaigns")
    await page.wait_for_selector("#campaign-table, #campaign-rows p")
    await shot(page, "13-campaigns", settle=False)
    await page.goto(url + "/ui/campaigns/new")
    await page.wait_for_selector("#chain li")
    await page.fill("input[name=name]", "Нагадування про борг, грудень")
    if await page.locator("#segment-select option").count() > 1:
        await page.select_option("#segment-select", index=1)
    if await page.locator("#template-select option").count() > 1:
        await page.select_option("#template-select", index=1)
    await page.fill("input[name=rate_per_minute]", "3000")
    await shot(page, "14-campaign-new", settle=False)
    if campaign_id is not None:
        await page.goto(f"{url}/ui/campaigns/{campaign_id}")
        await page.wait_for_selector("#throughput .uplot")
        await page.wait_for_selector("#recipient-table, #recipients p")
        await shot(page, "15-campaign", settle=False)
        first = page.locator("#recipient-table a.drill-link").first
        if await first.count():
            await first.click()
            await page.wait_for_selector("#drill-result")
            await page.locator("#drill-panel").scroll_into_view_if_needed()
            await shot(page, "16-campaign-client", settle=False)
    await context.clear_cookies()
    await log_in(page, url, "admin")
    await page.goto(url + "/ui/triggers")
    # A new producer each run (names are unique): its key is shown once, as on the day.
    await page.fill("#producer-form input[name=name]", f"Білінг {time.strftime('%H:%M:%S')}")
    await page.fill("#producer-form input[name=event_types]", "billing.payment_received")
    await page.click("#producer-form button[type=submit]")
    await page.wait_for_selector("#api-key")
    await shot(page, "17-triggers", settle=False)
    await page.goto(url + "/ui/triggers/new")
    await page.wait_for_selector("#rule-form")
    await page.fill("input[name=name]", "Дякуємо за оплату")
    await page.fill("input[name=event_type]", "billing.payment_received")
    await page.locator("input[name=cond_path]").first.fill("amount")
    await page.locator("select[name=cond_op]").first.select_option("gte")
    await page.locator("input[name=cond_value]").first.fill("100")
    await page.locator("select[name=client_attribute]").first.select_option("region")
    await page.locator("select[name=client_op]").first.select_option("in")
    await page.locator("input[name=client_value]").first.fill("UA-46, UA-32")
    await shot(page, "18-trigger-new", settle=False)
    await context.close()
