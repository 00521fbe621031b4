"""The marketer's demo flow in Chromium on the real services (API, worker, simulators):
a campaign on a segment with the chain Email -> Viber -> SMS and a per-minute limit,
launched, its funnel moving live, paused (sending stops), resumed, finished, one client
drilled down, copied; a trigger rule firing on a posted event."""

from __future__ import annotations

import asyncio

from dispatch_helpers import Stack, make_clients
from playwright.async_api import Page, expect
from test_ui_browser import base, browser, log_in  # noqa: F401  # fixture
from test_ui_browser import page as page  # fixture
from ui_helpers import click_menu

SLOW = 60_000


async def _sent_in_db(stack: Stack, campaign_id: int) -> int:
    return int(
        await stack.conn.fetchval(
            "SELECT count(*) FROM message_events WHERE campaign_id = $1 AND status = 'sent'",
            campaign_id,
        )
    )


async def _chain(page: Page) -> list[str]:
    return await page.locator("#chain li").evaluate_all(
        "items => items.map(i => i.dataset.channel)"
    )


async def test_campaign_demo_flow(stack: Stack, page: Page) -> None:  # fixture
    ids = await make_clients(stack.conn, 20, region="UA-46")
    template_id = await stack.template()
    segment = await stack.call(
        "POST",
        "/api/v1/segments",
        {
            "name": "Львівщина",
            "kind": "static",
            "condition": {"attribute": "account.region", "op": "equals", "value": "UA-46"},
        },
        201,
    )
    url = base(stack.api)
    await log_in(page, url, "marketer")
    await click_menu(page, "campaigns")
    await expect(page.locator("h1")).to_have_text("Кампанії")
    await page.click("#new-campaign")
    await page.fill("input[name=name]", "Борг грудня, Львівщина")
    await page.select_option("#segment-select", str(segment["id"]))
    await page.select_option("#template-select", f"{template_id}:1")
    # The chain by drag and drop (SMS to the top), then back with the arrow buttons
    assert await _chain(page) == ["email", "viber", "sms"]
    await page.drag_and_drop(
        "#chain li[data-channel=sms]",
        "#chain li[data-channel=email]",
        target_position={"x": 8, "y": 3},
    )
    assert await _chain(page) == ["sms", "email", "viber"]
    await page.click("#chain li[data-channel=sms] button[data-move=down]")
    await page.click("#chain li[data-channel=sms] button[data-move=down]")
    assert await _chain(page) == ["email", "viber", "sms"]
    await page.fill("input[name=rate_per_minute]", "120")
    await page.fill("input[name=receipt_timeout_seconds]", "60")
    await page.click("#save-campaign")
    await expect(page.locator("#campaign-status")).to_have_text("Чернетка")
    await expect(page.locator("#campaign-chain")).to_contain_text("Viber → SMS")
    campaign_id = int(await page.locator("#funnel-panel").get_attribute("data-campaign") or 0)
    # Launch: running, and the funnel moves over the live stream
    await page.click("#launch")
    await expect(page.locator("#campaign-status")).to_have_text("Триває", timeout=SLOW)
    await expect(page.locator("#funnel [data-k=audience]")).to_have_text("20", timeout=SLOW)
    await page.wait_for_function(
        "() => Number(document.querySelector('#funnel [data-k=sent]').textContent) >= 3",
        timeout=SLOW,
    )
    # Pause: sending stops (in-flight calls finish first)
    await page.click("#pause")
    await expect(page.locator("#campaign-status")).to_have_text("Призупинено")
    await asyncio.sleep(1.5)
    paused_at = await _sent_in_db(stack, campaign_id)
    await asyncio.sleep(2.5)
    assert await _sent_in_db(stack, campaign_id) == paused_at < 20
    await expect(page.locator("#funnel [data-k=sent]")).to_have_text(str(paused_at))
    # Resume: it finishes, every one sent by e-mail (the first step)
    await page.click("#resume")
    await expect(page.locator("#campaign-status")).to_have_text("Завершено", timeout=SLOW)
    await expect(page.locator("#funnel [data-k=sent]")).to_have_text("20", timeout=SLOW)
    await expect(page.locator("#funnel [data-k='sent:email']")).to_have_text("20")
    await expect(page.locator("#throughput .uplot")).to_be_attached()
    # Recipients by status, and one client's messages, steps and receipts
    await expect(page.locator("#recipient-table tbody tr")).to_have_count(20)
    await page.fill("#drill-client", str(ids[0]))
    await page.click("#drill-form button[type=submit]")
    await expect(page.locator("#drill-events tr[data-status=sent]")).to_have_count(1)
    await expect(page.locator("#drill-events")).to_contain_text(f"c{campaign_id}:{ids[0]}:0")
    # Copy: a new draft with the same settings opens in its form
    await page.click("#copy-campaign")
    await expect(page.locator("input[name=name]")).to_have_value("Борг грудня, Львівщина (копія)")
    assert await _chain(page) == ["email", "viber", "sms"]
    await expect(page.locator("input[name=rate_per_minute]")).to_have_value("120")


async def test_trigger_rule_fires_on_a_posted_event(stack: Stack, page: Page) -> None:
    ids = await make_clients(stack.conn, 1)
    template_id = await stack.template()
    url = base(stack.api)
    await log_in(page, url, "admin")
    await click_menu(page, "triggers")
    await expect(page.locator("h1")).to_have_text("Тригерні правила")
    # A producer and its key, shown once
    await page.fill("#producer-form input[name=name]", "Білінг")
    await page.fill("#producer-form input[name=event_types]", "billing.payment_received")
    await page.click("#producer-form button[type=submit]")
    key = (await page.locator("#api-key").text_content() or "").strip()
    assert key.startswith("hpk_")
    # A rule: payments of 100 or more, Viber then SMS
    await page.click("#new-rule")
    await page.fill("input[name=name]", "Дякуємо за оплату")
    await page.fill("input[name=event_type]", "billing.payment_received")
    await page.select_option("#template-select", f"{template_id}:1")
    await page.locator("#chain li[data-channel=email] input").uncheck()
    await page.locator("input[name=cond_path]").first.fill("amount")
    await page.locator("select[name=cond_op]").first.select_option("gte")
    await page.locator("input[name=cond_value]").first.fill("100")
    await page.click("#save-rule")
    await expect(page.locator("#rule-table")).to_contain_text("Дякуємо за оплату")
    # The producer posts a payment: the event shows with the message it caused
    response = await stack.api.post(
        "/api/v1/events",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "events": [
                {
                    "event_id": "pay-77",
                    "type": "billing.payment_received",
                    "client_id": ids[0],
                    "occurred_at": "2026-12-01T10:00:00+02:00",
                    "data": {"amount": 250},
                }
            ]
        },
    )
    assert response.status == 200, await response.text()
    for _ in range(100):
        if await stack.conn.fetchval(
            "SELECT count(*) FROM message_events WHERE message_id LIKE 't%' AND status = 'sent'"
        ):
            break
        await asyncio.sleep(0.2)
    await page.click("#refresh-events")
    caused = page.locator("#event-table tr[data-event=pay-77] li[data-message]")
    await expect(caused).to_contain_text("Дякуємо за оплату")
    await expect(caused).to_contain_text("Viber")
