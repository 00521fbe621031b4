"""Screenshots of the supervisor's and administrator's workspace (issue 15): the
wallboard, the team queue, an agent's day, the administration's pages and the audit
journal. Called by ``herald screenshots`` (herald/cli/screenshots.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Shot = Callable[..., Awaitable[None]]
LogIn = Callable[[Any, str, str], Awaitable[None]]


async def supervisor_and_admin(
    browser: Any, url: str, shot: Shot, log_in: LogIn, viewport: Any
) -> None:
    context = await browser.new_context(viewport=viewport, locale="uk-UA")
    page = await context.new_page()
    await log_in(page, url, "supervisor")
    await page.goto(url + "/ui/supervisor")
    await page.wait_for_selector("#board .wallboard")
    await shot(page, "13-wallboard")
    await page.locator("#agents").scroll_into_view_if_needed()
    await shot(page, "14-wallboard-agents")
    await page.goto(url + "/ui/supervisor/team")
    await shot(page, "15-team-queue")
    agent = page.locator("#agents a").first
    await page.goto(url + "/ui/supervisor")
    if await agent.count():
        await agent.click()
        await page.wait_for_selector("#presence-timeline")
        await shot(page, "16-agent-day")
    await context.clear_cookies()
    await log_in(page, url, "admin")
    for path, name in (
        ("/ui/admin/users", "17-admin-users"),
        ("/ui/admin/roles", "18-admin-roles"),
        ("/ui/admin/cases", "19-admin-case-settings"),
        ("/ui/admin/integrations", "20-admin-integrations"),
        ("/ui/audit", "21-audit"),
    ):
        await page.goto(url + path)
        await shot(page, name)
    await context.close()
