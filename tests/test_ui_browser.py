"""The operator's workspace end to end in Chromium, on the real services.

One browser for the whole run (a new context per test); each test drives several steps of
the demo scenario, so there are few of them.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import login_as
from dispatch_helpers import Stack, make_clients
from playwright.async_api import Page, expect
from test_card import make_client
from test_operator_send import allowed_template
from ui_helpers import click_menu

from admin_api.ui import menu
from herald.cli.browser import VIEWPORT, chromium
from herald.cli.demo import DEMO_USERS

TIMEOUT = 10_000


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    async with chromium() as found:
        yield found


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Page]:
    """A fresh browser context; ask for it last, so it closes (and its live stream with it)
    before the test's server stops."""
    context = await browser.new_context(viewport=VIEWPORT, locale="uk-UA")
    context.set_default_timeout(TIMEOUT)
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    opened.on("pageerror", lambda e: errors.append(str(e)))
    yield opened
    await context.close()
    # No script refused by the Content-Security-Policy, no script error on any page
    assert [e for e in errors if "Content Security Policy" in e or "Error" in e] == []


def base(client: Any) -> str:
    return str(client.make_url("")).rstrip("/")


async def log_in(page: Page, url: str, role: str) -> None:
    user = next(d for d in DEMO_USERS if d.role == role)
    await page.goto(url + "/ui/login")
    await page.fill("#login", user.login)
    await page.fill("#password", user.password)
    await page.click("button[type=submit]")
    await expect(page.locator(".topbar")).to_be_visible()


async def test_roles_menus_language_and_return_after_login(
    client, demo_users, admin_conn, page: Page
) -> None:
    url = base(client)
    perms = {
        r["role_code"]: set(r["perms"])
        for r in await admin_conn.fetch(
            "SELECT role_code, array_agg(permission_code) AS perms FROM role_permissions "
            "GROUP BY role_code"
        )
    }
    for role in ("operator_cc", "operator_cos", "supervisor", "marketer", "analyst", "admin"):
        await log_in(page, url, role)
        expected = [i.key for i in menu.ITEMS if i.permission in perms[role]]
        shown = await page.locator("nav.menu a").evaluate_all(
            "links => links.map(a => a.dataset.menu)"
        )
        assert shown == expected, role
        await page.click("text=Вийти")
        await expect(page.locator("#login")).to_be_visible()
    # The language switch, stored for the user
    await log_in(page, url, "operator_cc")
    await expect(page.locator("h1")).to_have_text("Пошук клієнтів")
    await page.click("button[lang=en]")
    await expect(page.locator("h1")).to_have_text("Client search")
    await expect(page.locator("nav.menu a[data-menu=cases]")).to_have_text("Cases")
    # A lost session: to the login page, and back to the same page afterwards
    await page.context.clear_cookies()
    await page.goto(url + "/ui/cases?order=desc")
    await expect(page.locator("#login")).to_be_visible()
    user = next(d for d in DEMO_USERS if d.role == "operator_cc")
    await page.fill("#login", user.login)
    await page.fill("#password", user.password)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(re.compile(r"/ui/cases\?order=desc$"))
    await expect(page.locator("h1")).to_have_text("Cases")


async def test_search_by_keyboard_open_card_edit_phone_and_see_the_audit(
    client, demo_users, admin_conn, page: Page
) -> None:
    client_id, _ = await make_client(admin_conn, ("1000000501", "1000000502"))
    url = base(client)
    await log_in(page, url, "operator_cc")
    # Results as you type; arrows and Enter open the card
    await page.fill("#q", "шевченко тарас")
    await expect(page.locator(f"a.result[data-client='{client_id}']")).to_be_visible()
    await page.press("#q", "ArrowDown")
    await page.keyboard.press("Enter")
    await expect(page.locator("#client-name")).to_have_text("Шевченко Тарас Григорович")
    await expect(page.locator("#accounts article")).to_have_count(2)
    # Edit the owner's phone; the audit entry shows in the card's history
    await page.click("#contacts details.edit summary")
    await page.fill("#contacts details.edit input[name=phone]", "067 555 44 33")
    await page.click("#contacts details.edit button.primary")
    await expect(page.locator("#contacts .contact-phone").first).to_have_text("+380675554433")
    row = page.locator("#history .audit-row[data-field=phone]")
    await expect(row).to_contain_text("+380675554433")
    await expect(row).to_contain_text("operator.cc")
    # Billing refresh keeps the card whole even with billing away (stale mark shown)
    await page.click("#refresh-billing")
    await expect(page.locator("#accounts .billing").first).to_be_visible()


async def test_incoming_call_pops_the_card_and_an_sms_reaches_the_timeline(
    stack: Stack, page: Page
) -> None:
    ids = await make_clients(stack.conn, 1)
    template = await allowed_template(stack)
    url = base(stack.api)
    await log_in(page, url, "operator_cc")
    await expect(page.locator("#live-state.on")).to_be_attached()
    # VICIdial rings: the card opens before the call is answered
    integration = await login_as(stack.api, "integration")
    phone = await stack.conn.fetchval("SELECT phone FROM contacts WHERE client_id = $1", ids[0])
    response = await stack.api.post(
        "/api/v1/cti/calls",
        headers=integration,
        json={
            "event": "ringing",
            "call_id": "V2000000001",
            "phone_number": phone,
            "user": "operator.cc",
        },
    )
    assert response.status == 200, await response.text()
    await expect(page.locator("#call-pop .call-ringing")).to_be_visible()
    await expect(page.locator("#client-id")).to_have_text(str(ids[0]))
    await expect(page).to_have_url(re.compile(rf"/ui/clients/{ids[0]}\?call="))
    # Mid-call: pick the template, see it rendered for this client, send by SMS
    await page.select_option("#send-template", str(template))
    await expect(page.locator("#preview-text")).to_contain_text("Олена")
    await page.check("input[name=channel][value=sms]")
    await page.click("#send-button")
    await expect(page.locator("#send-accepted")).to_be_visible()
    await expect(page.locator("#message-status[data-status=delivered]")).to_be_visible()
    await expect(page.locator("#timeline .tl-message[data-status=delivered]").first).to_be_visible()
    # The call ends: the panel names the case it became and opens exactly that case
    for event in ("answered", "hung_up"):
        response = await stack.api.post(
            "/api/v1/cti/calls",
            headers=integration,
            json={
                "event": event,
                "call_id": "V2000000001",
                "phone_number": phone,
                "user": "operator.cc",
            },
        )
        assert response.status == 200, await response.text()
    case_id = await stack.conn.fetchval("SELECT id FROM cases WHERE client_id = $1", ids[0])
    link = page.locator(f"#call-pop #call-case-link[data-case='{case_id}']")
    await expect(link).to_have_text(re.compile(r"^ЗВ-\d{4}-\d+$"))
    await link.click()
    await expect(page).to_have_url(re.compile(rf"/ui/cases/{case_id}$"))
    await expect(page.locator("#case-client")).to_have_attribute("href", f"/ui/clients/{ids[0]}")
    # A reply by SMS from the case: its delivery status follows live in the thread
    await page.check("#reply-form input[value=sms]")
    await page.fill("#reply-text", "Показники прийнято.")
    await page.click("#reply-form button.primary")
    # (the client's "case registered" notification by Viber is in the thread too)
    await expect(
        page.locator("#thread .ev-delivery .delivery[data-status=delivered]").filter(has_text="SMS")
    ).to_be_visible()


async def test_walk_in_case_take_next_status_reply_and_the_sla_timer(
    client, demo_users, admin_conn, page: Page
) -> None:
    admin = await login_as(client, "admin")
    all_week = {
        d: [{"start": "00:00", "end": "24:00"}]
        for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    }
    calendar = await (
        await client.post(
            "/api/v1/business-calendars",
            headers=admin,
            json={"name": "Цілодобово", "week": all_week},
        )
    ).json()
    policy = await client.post(
        "/api/v1/case-sla-policies",
        headers=admin,
        json={
            "name": "Візити",
            "calendar_id": calendar["id"],
            "first_response_minutes": 120,
            "resolution_minutes": 2880,
        },
    )
    assert policy.status == 201, await policy.text()
    operator_id = await admin_conn.fetchval("SELECT id FROM users WHERE login = 'operator.cc'")
    await admin_conn.execute(
        "INSERT INTO case_group_members (group_code, user_id) VALUES ('cc_l1', $1)", operator_id
    )
    url = base(client)
    # A service-centre operator registers a walk-in case
    await log_in(page, url, "operator_cos")
    await click_menu(page, "case-new")
    await page.fill("textarea[name=text]", "Прошу перевірити нарахування за січень")
    await page.fill("input[name=subject]", "Перевірка нарахувань")
    await page.fill("input[name=phone]", "+380671234567")
    await page.fill("input[name=email]", "visitor@example.com")
    await page.click("#register-case")
    await expect(page.locator("#case-number")).to_have_text(re.compile(r"^ЗВ-\d{4}-\d+$"))
    case_id = int(page.url.rsplit("/", 1)[1])
    await admin_conn.execute(
        "UPDATE cases SET group_code = 'cc_l1', assignee_id = NULL WHERE id = $1", case_id
    )
    await page.click("text=Вийти")
    # A contact-centre operator goes online and takes the next case
    await log_in(page, url, "operator_cc")
    await click_menu(page, "cases")
    await expect(page.locator(f"tr[data-case-id='{case_id}']")).to_be_visible()
    await page.select_option("#presence-select", "online")
    await expect(page.locator("#presence.presence-online")).to_be_attached()
    await page.click("#take-next")
    await expect(page.locator("#case-number")).to_be_visible()
    assert page.url.endswith(f"/ui/cases/{case_id}")
    # The SLA timer counts down live
    countdown = page.locator("#case-sla [data-countdown]")
    await expect(countdown).to_have_text(re.compile(r"^\d{2}:\d{2}:\d{2}$"))
    first = await countdown.text_content()
    await expect(countdown).not_to_have_text(first or "")
    # Status along the configured model, then a reply in the thread
    await page.click("#status-panel button[data-to=in_progress]")
    await expect(page.locator("#case-status")).to_have_text("В роботі")
    await page.check("#reply-form input[value=email]")
    await page.fill("#reply-text", "Перевірили: нарахування правильні.")
    await page.click("#reply-form button.primary")
    await expect(page.locator("#case-message[role=status]")).to_be_visible()
    await expect(page.locator("#thread")).to_contain_text("Перевірили: нарахування правильні.")


async def test_more_search_results_extend_the_same_table(
    client, demo_users, admin_conn, page: Page
) -> None:
    await make_clients(admin_conn, 45, start=700_001)  # 45 × Коваленко Олена Петрівна
    await log_in(page, base(client), "operator_cc")
    await page.fill("#q", "Коваленко Олена")
    rows = page.locator("#results table.result-table tr.result-row")
    await expect(rows.nth(19)).to_be_attached()  # a page is 20 rows
    # the end of the table coming into view fetches the next pages into the same table
    for _ in range(20):
        if await rows.count() == 45:
            break
        await page.mouse.wheel(0, 4000)
        await page.wait_for_timeout(250)
    await expect(rows).to_have_count(45)
    await expect(page.locator("#results table")).to_have_count(1)
    await expect(page.locator("#results tr.more")).to_have_count(0)
    # ↓ walks on through the rows that came later
    await page.locator("#results a.result").nth(43).focus()
    await page.keyboard.press("ArrowDown")
    await expect(page.locator("#results a.result").nth(44)).to_be_focused()
