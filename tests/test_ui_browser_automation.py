"""The no-code workflow designer (issue 15) end to end in Chromium: a supervisor builds
"a case in topic Debt from a client with debt > 1000 UAH -> priority high, group Finance,
SMS to the client", dry-runs it against an existing case, switches it on, a case comes
in through intake and the rule acts; then a version of the rule is rolled back."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import login_as
from playwright.async_api import Page, expect
from test_cases_support import make_client, ok
from test_ui_browser import TIMEOUT, base, log_in
from ui_helpers import click_menu

from herald.cli.browser import VIEWPORT, chromium


@pytest.fixture(scope="module")
async def automation_browser() -> AsyncIterator[Any]:
    async with chromium() as found:
        yield found


@pytest.fixture
async def page(automation_browser: Any) -> AsyncIterator[Page]:
    context = await automation_browser.new_context(viewport=VIEWPORT, locale="uk-UA")
    context.set_default_timeout(TIMEOUT)
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    opened.on("pageerror", lambda e: errors.append(str(e)))
    yield opened
    await context.close()
    # No script refused by the Content-Security-Policy, no script error on the page
    assert [e for e in errors if "Content Security Policy" in e or "Error" in e] == []


async def test_build_dry_run_enable_and_see_the_rule_act_then_roll_back(
    client, demo_users, admin_conn, page: Page
) -> None:
    debtor = await make_client(admin_conn, phone="+380671234567", debt=1500)
    integration = await login_as(client, "integration")
    earlier = await ok(
        await client.post(
            "/api/v1/case-intake/forms",
            headers=integration,
            json={
                "source": "site",
                "text": "Маю борг, хочу розстрочку",
                "client_id": debtor["client_id"],
            },
        )
    )
    number = earlier["number"]
    url = base(client)
    await log_in(page, url, "supervisor")
    await click_menu(page, "automation")
    await expect(page.locator("h1")).to_have_text("Автоматизація звернень")
    editor = page.locator("#rule-editor")
    await editor.locator("input[name=name]").fill("Борг понад 1000 грн")
    # When: a case is created (the default). If: topic Debt AND debt > 1000
    await page.click("#add-condition")
    first = editor.locator(".tree-row.is-cond").nth(0)
    await first.locator("select[name=cond-field]").select_option("category")
    await first.locator("select[name=cond-op]").select_option("under")
    await first.locator("select[name=cond-value]").select_option("billing.debt")
    await editor.locator(".tree-row.is-group").first.get_by_role("button", name="+ умова").click()
    second = editor.locator(".tree-row.is-cond").nth(1)
    await second.locator("select[name=cond-field]").select_option("client.debt")
    await second.locator("select[name=cond-op]").select_option("gt")
    await second.locator("input[name=cond-value]").fill("1000")
    # Then: priority high, group Finance, SMS to the client
    await editor.locator("select[name=add-action]").select_option("set_priority")
    await editor.locator("li.action[data-type=set_priority] select").select_option("high")
    await editor.locator("select[name=add-action]").select_option("set_group")
    await editor.locator("li.action[data-type=set_group] select").select_option("finance")
    await editor.locator("select[name=add-action]").select_option("send_message")
    template = await admin_conn.fetchval(
        "SELECT id FROM message_templates WHERE name = 'Звернення зареєстровано'"
    )
    await editor.locator("select[name=action-template]").select_option(str(template))
    await editor.locator("select[name=action-chain]").select_option("sms")
    # A bad value is named next to its field
    await page.fill("input[name=case_number]", "ЗВ-0000-0000000")
    await page.click("#dry-run")
    await expect(editor.locator(".field-error").filter(has_text="no case")).to_be_visible()
    # Dry run against the earlier case: it would act; nothing changes
    await page.fill("input[name=case_number]", number)
    await page.click("#dry-run")
    result = page.locator("#dry-result")
    await expect(result.locator(".verdict")).to_have_text("Умова виконується: правило спрацювало б")
    await expect(result.locator("table")).to_contain_text('"high"')
    await expect(result.locator("ol.outcomes li")).to_have_count(3)
    await expect(result.locator("ol.outcomes")).to_contain_text("finance")
    assert (
        await admin_conn.fetchval("SELECT priority FROM cases WHERE number = $1", number)
        == "normal"
    )
    # Switch it on and save
    await editor.locator("input[name=is_active]").check()
    await page.click("#save-rule")
    await expect(page).to_have_url(re.compile(r"/ui/automation\?rule=\d+$"))
    row = page.locator("#rules-table tr[data-rule-id]").first
    await expect(row).to_contain_text("Борг понад 1000 грн")
    await expect(row.locator("button.toggle")).to_have_text("увімк.")
    # A case comes in through intake: the rule acts in the intake's transaction
    fresh = await ok(
        await client.post(
            "/api/v1/case-intake/forms",
            headers=integration,
            json={
                "source": "site",
                "text": "Знову борг за газ",
                "or_number": debtor["or_number"],
                "client_id": debtor["client_id"],
            },
        )
    )
    await page.goto(f"{url}/ui/cases/{fresh['case_id']}")
    await expect(page.locator(".tag.prio-high").first).to_have_text("Високий")
    await expect(page.locator(".ev-automation").first).to_contain_text("Борг понад 1000 грн")
    row = await admin_conn.fetchrow(
        "SELECT c.group_code, o.kind, o.payload FROM cases c "
        "JOIN case_rule_outbox o ON o.case_id = c.id WHERE c.id = $1",
        fresh["case_id"],
    )
    assert (row["group_code"], row["kind"], row["payload"]["channel_chain"]) == (
        "finance",
        "message",
        ["sms"],
    )
    # A new version (renamed), then the first one restored
    await page.goto(f"{url}/ui/automation")
    await page.click("#rules-table a:has-text('Борг понад 1000 грн')")
    await editor.locator("input[name=name]").fill("Борг: нова назва")
    await page.click("#save-rule")
    await expect(page.locator("#rules-table")).to_contain_text("Борг: нова назва")
    versions = page.locator("#versions-table")
    await expect(versions.locator("tr[data-version]")).to_have_count(2)
    await versions.locator("tr[data-version='2']").get_by_role("button", name="Зміни").click()
    await expect(page.locator("#version-diff")).to_contain_text("Борг: нова назва")
    page.once("dialog", lambda dialog: dialog.accept())
    await versions.locator("tr[data-version='1']").get_by_role("button", name="Відновити").click()
    await expect(page.locator("#versions-table tr[data-version]")).to_have_count(3)
    await expect(page.locator("#rules-table")).to_contain_text("Борг понад 1000 грн")
    assert await admin_conn.fetchval("SELECT version FROM case_rules") == 3
