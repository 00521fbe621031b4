"""The marketer's content pages end to end in Chromium, on the real services: a template
built with variables and previewed for a client, a segment built while its count follows,
an opt-out made in the UI and a stop-list entry that stop the next send."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import login_as
from dispatch_helpers import Stack, make_clients
from playwright.async_api import Page, expect
from test_operator_send import allowed_template, send
from ui_helpers import click_menu

from herald.cli.browser import VIEWPORT, chromium
from herald.cli.demo import DEMO_USERS

TIMEOUT = 10_000


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    async with chromium() as found:
        yield found


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Page]:
    """A fresh browser context (asked for last, so it closes before the server stops)."""
    context = await browser.new_context(viewport=VIEWPORT, locale="uk-UA")
    context.set_default_timeout(TIMEOUT)
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    opened.on("pageerror", lambda e: errors.append(str(e)))
    yield opened
    await context.close()
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


async def test_build_a_template_with_variables_preview_it_version_and_diff(
    client, demo_users, admin_conn, page: Page
) -> None:
    [client_id] = await make_clients(admin_conn, 1)
    url = base(client)
    await log_in(page, url, "marketer")
    await click_menu(page, "templates")
    await expect(page.locator("h1")).to_have_text("Шаблони повідомлень")
    await page.click("#new-template")
    await page.fill("input[name=name]", "Нагадування про борг")
    await page.select_option("select[name=topic]", "debt")
    sms = page.locator("textarea[name='b.uk.sms.text']")
    await sms.fill("Шановна , ваш ОР ")
    # The palette inserts at the cursor
    await sms.focus()
    await sms.evaluate("el => el.setSelectionRange(8, 8)")
    await page.click("#palette [data-insert=first_name]")
    await sms.press("End")
    await page.click("#palette [data-insert=or_number]")
    await expect(sms).to_have_value("Шановна {{ first_name }}, ваш ОР {{ or_number }}")
    # Preview with example values, then for the chosen client
    await expect(page.locator("#rendered")).to_contain_text("Шановна Мар")
    await page.fill("#preview-client", str(client_id))
    await expect(page.locator("#rendered")).to_contain_text("Шановна Олена, ваш ОР")
    cost = page.locator("#sms-cost")
    await expect(cost).to_have_attribute("data-encoding", "ucs2")
    await expect(cost).to_contain_text("UCS-2")
    await expect(page.locator("#sms-latin")).to_contain_text("Shanovna Olena")
    # An error is shown beside its field, at its line
    await sms.fill("Рядок один\n{{ first_name }} {{ unknown_thing }}")
    await page.click("#save-template")
    error = page.locator("[data-error-for='b.uk.sms.text']")
    await expect(error).to_contain_text("Рядок 2")
    await expect(error).to_contain_text("unknown_thing")
    await page.locator("textarea[name='b.uk.sms.text']").fill("Шановна {{ first_name }}!")
    await page.click("#save-template")
    await expect(page.locator("#saved-note")).to_contain_text("версію 1")
    # A second version, the diff, and version 1 made current again
    await page.locator("textarea[name='b.uk.sms.text']").fill("Шановна {{ first_name }}, дякуємо!")
    await page.click("#save-template")
    await expect(page.locator("#saved-note")).to_contain_text("версію 2")
    await page.click("#show-diff")
    await expect(page.locator("#diff-lines .diff-add")).to_contain_text("дякуємо!")
    await page.click("tr[data-version='1'] button.make-current")
    await expect(page.locator("tr[data-version='1'] .ok-badge")).to_be_visible()
    found = re.search(r"/ui/templates/(\d+)", page.url)
    assert found, page.url
    template_id = int(found.group(1))
    assert (
        await admin_conn.fetchval(
            "SELECT current_version FROM message_templates WHERE id = $1", template_id
        )
        == 1
    )


async def test_build_a_segment_and_watch_the_count(
    client, demo_users, admin_conn, page: Page
) -> None:
    await make_clients(admin_conn, 5)
    await make_clients(admin_conn, 3, region="UA-30", start=101)
    url = base(client)
    await log_in(page, url, "marketer")
    await click_menu(page, "segments")
    await page.click("#new-segment")
    count = page.locator("#segment-count")
    await page.click("#segment-builder [data-role=add-condition]")
    leaf = page.locator("#segment-builder .seg-leaf").first
    await leaf.locator("select[data-role=attribute]").select_option("account.region")
    await leaf.locator("select[data-role=op]").select_option("in")
    await leaf.locator("select[data-role=value]").select_option(["UA-30"])
    await expect(count).to_have_attribute("data-count", "3")
    # NOT: everyone else
    await leaf.locator("input[data-role=not]").check()
    await expect(count).to_have_attribute("data-count", "5")
    await leaf.locator("input[data-role=not]").uncheck()
    await expect(count).to_have_attribute("data-count", "3")
    # A nested OR group with a second region
    await page.click("#segment-builder .seg-head [data-role=add-group]")
    inner = page.locator("#segment-builder .seg-items .seg-group .seg-leaf").first
    await inner.locator("select[data-role=attribute]").select_option("account.region")
    await inner.locator("select[data-role=op]").select_option("equals")
    await inner.locator("select[data-role=value]").select_option("UA-32")
    await expect(count).to_have_attribute("data-count", "0")  # UA-30 and UA-32: nobody
    await page.locator("#segment-builder .seg-head select[data-role=group]").first.select_option(
        "any"
    )
    await expect(count).to_have_attribute("data-count", "8")
    await page.fill("input[name=name]", "Київ і область")
    await page.click("#save-segment")
    await expect(page.locator("#member-count")).to_have_text("8")
    await expect(page.locator("#export-link")).to_be_visible()


async def test_an_opt_out_and_a_stop_list_made_in_the_ui_stop_the_next_send(
    stack: Stack, page: Page
) -> None:
    ids = await make_clients(stack.conn, 3)
    template = await allowed_template(stack)  # topic billing, SMS and Viber
    operator = await login_as(stack.api, "operator_cos")
    url = base(stack.api)
    await log_in(page, url, "marketer")
    await click_menu(page, "stop-lists")
    # Opt the first client out of billing messages on SMS and Viber
    await page.fill("#consent-lookup input[name=client_id]", str(ids[0]))
    await page.click("#consent-lookup button")
    for channel in ("sms", "viber"):
        cell = page.locator(f"tr[data-topic=billing] td[data-channel={channel}]")
        await expect(cell).to_have_attribute("data-state", "yes")
        await cell.locator("button").click()
        await expect(
            page.locator(f"tr[data-topic=billing] td[data-channel={channel}]")
        ).to_have_attribute("data-state", "no")
    await expect(page.locator(".consent-log tr[data-log]")).to_have_count(2)
    refused = await send(stack, operator, ids[0], {"template_id": template}, 409)
    assert refused["checks"]["reason"] == "no_consent"
    # Stop-list the second client for billing messages
    await page.fill("#stop-list-form input[name=client_id]", str(ids[1]))
    await page.fill("#stop-list-form input[name=reason]", "Судова справа")
    await page.check("#stop-list-form input[name=topics][value=billing]")
    await page.click("#stop-list-add")
    row = page.locator(f"#stop-list-entries tr[data-client='{ids[1]}']")
    await expect(row).to_contain_text("Судова справа")
    await expect(row).to_contain_text("marketer")
    refused = await send(stack, operator, ids[1], {"template_id": template, "channel": "sms"}, 409)
    assert refused["checks"]["reason"] == "stop_list"
    # The third client, untouched, is sent to
    await send(stack, operator, ids[2], {"template_id": template}, 202)
