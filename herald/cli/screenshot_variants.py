"""The narrow, empty and error variants of `herald screenshots` (see herald/cli/screenshots.py).

- every operator page again at 1024x768 (a small office monitor) and the card at 400 px
  wide (a phone or a narrow side panel): ``w1024-*.png``, ``w400-*.png``;
- empty states: a client with nothing yet (no cases, calls, messages or readings), a queue
  and a task list with nothing in them: ``empty-*.png``;
- errors: an action the server refuses (a page of another role, "take next" with nothing
  to take), and a lost live stream (its server unreachable): ``error-*.png``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

Shot = Callable[..., Awaitable[None]]
NARROW = {"width": 1024, "height": 768}
PHONE = {"width": 400, "height": 860}


async def empty_client(conn: asyncpg.Connection) -> int:
    """A client with no case, call, message, reading or change yet."""
    found = await conn.fetchval(
        """
        SELECT c.id FROM clients c
        WHERE NOT EXISTS (SELECT 1 FROM cases k WHERE k.client_id = c.id)
          AND NOT EXISTS (SELECT 1 FROM timeline_events t WHERE t.client_id = c.id)
          AND NOT EXISTS (SELECT 1 FROM message_events m WHERE m.client_id = c.id)
          AND NOT EXISTS (SELECT 1 FROM meter_readings r JOIN meters m ON m.id = r.meter_id
                          JOIN accounts a ON a.id = m.account_id WHERE a.client_id = c.id)
        ORDER BY c.id LIMIT 1
        """
    )
    if found is None:
        raise RuntimeError("no client without history on this database")
    return int(found)


async def a_case(conn: asyncpg.Connection) -> int | None:
    """An open case with a thread worth showing (replies, a status history)."""
    return await conn.fetchval(
        "SELECT c.id FROM cases c WHERE c.status = 'in_progress' AND c.client_id IS NOT NULL "
        "ORDER BY (SELECT count(*) FROM case_events e WHERE e.case_id = c.id) DESC, c.id LIMIT 1"
    )


async def _card(page: Any, url: str, client_id: int) -> None:
    await page.goto(f"{url}/ui/clients/{client_id}")
    await page.wait_for_selector("#timeline .tl-item, #timeline-empty")


async def narrow(
    browser: Any,
    url: str,
    shot: Shot,
    log_in: Callable[..., Awaitable[None]],
    *,
    client_id: int,
    surname: str,
    case_id: int | None,
) -> None:
    """The operator's pages at 1024x768, and the card at 400 px."""
    context = await browser.new_context(viewport=NARROW, locale="uk-UA")
    page = await context.new_page()
    await page.goto(url + "/ui/login")
    await shot(page, "w1024-01-login")
    await log_in(page, url, "operator_cc")
    await page.fill("#q", surname)
    await page.wait_for_selector("#results a.result")
    await shot(page, "w1024-02-search")
    await _card(page, url, client_id)
    await shot(page, "w1024-03-card")
    await page.goto(url + "/ui/cases")
    await shot(page, "w1024-06-cases")
    if case_id is not None:
        await page.goto(f"{url}/ui/cases/{case_id}")
        await shot(page, "w1024-10-case")
    await page.goto(url + "/ui/tasks")
    await shot(page, "w1024-12-tasks")
    await page.goto(url + "/ui/cases/new")
    await shot(page, "w1024-09-case-new")
    await context.close()
    context = await browser.new_context(viewport=PHONE, locale="uk-UA")
    page = await context.new_page()
    await log_in(page, url, "operator_cc")
    await _card(page, url, client_id)
    await shot(page, "w400-03-card")
    if case_id is not None:
        await page.goto(f"{url}/ui/cases/{case_id}")
        await shot(page, "w400-10-case")
    await context.close()


async def empty_and_errors(
    browser: Any,
    url: str,
    shot: Shot,
    log_in: Callable[..., Awaitable[None]],
    *,
    empty_client_id: int,
    viewport: dict[str, int],
) -> None:
    """A client with nothing, an empty queue and task list, a refused action, a lost stream."""
    context = await browser.new_context(viewport=viewport, locale="uk-UA")
    page = await context.new_page()
    await log_in(page, url, "operator_cos")
    await _card(page, url, empty_client_id)
    await shot(page, "empty-03-card")
    await page.goto(url + "/ui/cases?number=%D0%97%D0%92-0000-0000000")
    await shot(page, "empty-06-cases")
    await page.goto(url + "/ui/tasks?status=cancelled")
    await shot(page, "empty-12-tasks")
    # Refused: a page of another role's workspace; "take next" while away
    await page.goto(url + "/ui/admin/users")
    await shot(page, "error-403")
    await page.goto(url + "/ui/cases")
    if await page.locator("#presence-select").count():
        await page.select_option("#presence-select", "away")
        await page.wait_for_load_state("networkidle")
    if await page.locator("#take-next").count():
        await page.click("#take-next")
        await page.wait_for_selector("#flash :is(.flash, [role=alert])", timeout=5000)
        await shot(page, "error-take-next")
        await page.select_option("#presence-select", "online")
    # The live stream lost: the stream's server cannot be reached (every attempt refused),
    # the top bar says so and htmx keeps retrying
    await page.route("**/ui/live*", lambda route: route.abort("connectionrefused"))
    await _card(page, url, empty_client_id)
    await page.wait_for_selector("#live-state.lost", timeout=15000)
    await shot(page, "error-live-lost", False)  # a retrying stream's network never settles
    await context.close()
