"""Screenshots of the marketer's content pages (issue 14): the template constructor with a
live preview, the segment builder with its count, consents and stop lists, contact rules.

Like the rest of `herald screenshots` it acts as a person at the demo would: it saves a
template, a segment and a stop-list entry, so run it on a demo stand only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from herald.cli.browser import VIEWPORT

Shot = Callable[..., Awaitable[None]]
LogIn = Callable[[Any, str, str], Awaitable[None]]


async def content_pages(
    browser: Any, url: str, shot: Shot, log_in: LogIn, *, client_id: int
) -> None:
    context = await browser.new_context(viewport=VIEWPORT, locale="uk-UA")
    page = await context.new_page()
    await log_in(page, url, "marketer")
    # The template constructor: SMS and Viber bodies, a translation, the preview for a client
    await page.goto(url + "/ui/templates/new")
    await page.fill("input[name=name]", "Нагадування про заборгованість")
    await page.select_option("select[name=topic]", "debt")
    await page.fill(
        "textarea[name='b.uk.sms.text']",
        "{{ first_name }}, заборгованість за ОР {{ or_number }}: {{ debt }}. "
        "Сплатіть до {{ due_date }}: {{ payment_url }}",
    )
    await page.fill(
        "textarea[name='b.en.sms.text']",
        "{{ first_name }}, you owe {{ debt }} on account {{ or_number }}: {{ payment_url }}",
    )
    await page.click("details[data-channel=viber] summary")
    await page.fill(
        "textarea[name='b.uk.viber.text']",
        "{{ first_name }}, за особовим рахунком {{ or_number }} заборгованість {{ debt }}.",
    )
    await page.fill("input[name='b.uk.viber.button_text']", "Сплатити")
    await page.fill("input[name='b.uk.viber.button_url']", "{{ payment_url }}")
    await page.fill("#preview-client", str(client_id))
    await page.locator("#template-preview p.hint", has_text=str(client_id)).wait_for()
    await page.wait_for_selector("#sms-cost")
    await shot(page, "20-template-constructor")
    await page.click("#save-template")
    await page.wait_for_selector("#saved-note, #form-errors")
    await page.fill(
        "textarea[name='b.uk.sms.text']",
        "{{ first_name }}, борг за ОР {{ or_number }}: {{ debt }}. Оплата: {{ payment_url }}",
    )
    await page.click("#save-template")
    await page.wait_for_selector("#saved-note, #form-errors")
    await page.click("#show-diff")
    await page.wait_for_selector("#diff-lines")
    await page.locator("#versions").scroll_into_view_if_needed()
    await shot(page, "21-template-versions-diff")
    await page.goto(url + "/ui/templates")
    await shot(page, "22-templates")
    # The segment builder: region and debt, a nested OR group, the count
    await page.goto(url + "/ui/segments/new")
    await page.fill("input[name=name]", "Боржники Київщини")
    await page.click("#segment-builder [data-role=add-condition]")
    leaf = page.locator("#segment-builder .seg-leaf").first
    await leaf.locator("select[data-role=attribute]").select_option("account.region")
    await leaf.locator("select[data-role=op]").select_option("in")
    await leaf.locator("select[data-role=value]").select_option(["UA-30", "UA-32"])
    await page.click("#segment-builder .seg-head [data-role=add-group]")
    inner = page.locator("#segment-builder .seg-items .seg-group .seg-leaf").first
    await inner.locator("select[data-role=attribute]").select_option("billing.debt")
    await inner.locator("select[data-role=op]").select_option("gt")
    await inner.locator("input[data-role=value]").fill("500")
    await page.wait_for_selector("#segment-count")
    await page.wait_for_load_state("networkidle")
    await shot(page, "23-segment-builder")
    await page.click("#save-segment")
    await page.wait_for_selector("#member-count, #form-errors")
    await page.goto(url + "/ui/segments")
    await shot(page, "24-segments")
    # Consents and stop lists
    await page.goto(url + "/ui/stop-lists")
    await page.fill("#stop-list-form input[name=client_id]", str(client_id))
    await page.fill("#stop-list-form input[name=reason]", "Клієнт просив не турбувати до суду")
    await page.check("#stop-list-form input[name=topics][value=marketing]")
    await page.click("#stop-list-add")
    await page.wait_for_selector("#stop-list-entries")
    await page.fill("#consent-lookup input[name=client_id]", str(client_id))
    await page.click("#consent-lookup button")
    await page.wait_for_selector("#consents-result table")
    await shot(page, "25-stop-lists-consents")
    await page.locator("#client-consents").scroll_into_view_if_needed()
    await shot(page, "26-consents")
    await context.close()
    # Contact rules, as the administrator
    context = await browser.new_context(viewport=VIEWPORT, locale="uk-UA")
    page = await context.new_page()
    await log_in(page, url, "admin")
    await page.goto(url + "/ui/contact-rules")
    if not await page.locator("details.window[data-window]").count():
        # The customer's night quiet hours (IC-09), as the administrator would set them
        await page.click("#new-window summary")
        await page.fill("#new-window-form input[name=name]", "Нічна тиша")
        await page.fill("#new-window-form input[name=start]", "21:00")
        await page.fill("#new-window-form input[name=end]", "08:00")
        await page.click("#new-window-form button[type=submit]")
        await page.wait_for_selector("details.window[data-window]")
    # An alert declared for the picture, lifted right after it
    region = page.locator("#region-alerts tr[data-region=UA-30]")
    declared = await region.get_attribute("data-active") == "false"
    if declared:
        await region.locator("button").click()
        await page.wait_for_selector("#region-alerts tr[data-region=UA-30][data-active=true]")
    await shot(page, "27-contact-rules", False)  # the held block refreshes every 5 s
    if declared:
        await page.locator("#region-alerts tr[data-region=UA-30] button").click()
        await page.wait_for_selector("#region-alerts tr[data-region=UA-30][data-active=false]")
    await page.goto(f"{url}/ui/clients/{client_id}")
    await page.wait_for_selector("#consents-panel table")
    await page.locator("#consents-panel").scroll_into_view_if_needed()
    await shot(page, "28-card-consents", False)
    await context.close()
