"""`herald screenshots --out DIR`: the operator's pages with the demo data, in Chromium.

Runs the admin API and the billing simulator in this process on free local ports, over
the configured database (the one `herald up` seeded), logs in as the demo users and
writes one PNG per page at 1440x900. It acts like a person at the demo: it registers a
walk-in case and rings a VICIdial call, so run it on a demo stand, never in production.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgspec
from aiohttp import web

from admin_api.app import init_app
from crm.cases import rule_store
from crm.cases.rule_types import CaseRuleSpec
from crm.users import PasswordPolicy
from herald.audit import Actor
from herald.cli import screenshot_admin
from herald.cli import screenshot_campaigns as campaigns
from herald.cli import screenshot_marketer as marketer
from herald.cli import screenshot_variants as variants
from herald.cli.browser import VIEWPORT, chromium
from herald.cli.demo import DEMO_USERS, ensure_demo_users
from herald.db import init_connection
from herald.settings import Settings
from providers.sim.server import init_simulators_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[str]:
    """The admin API (and the billing simulator it reads) on local ports; yields its URL."""
    sim_port, api_port = free_port(), free_port()
    settings = msgspec.structs.replace(
        settings,
        billing_url=f"http://127.0.0.1:{sim_port}/billing",
        public_base_url=f"http://127.0.0.1:{api_port}",
        billing_timeout_seconds=2.0,
    )
    runners = []
    try:
        for app, port in (
            (init_simulators_app(settings), sim_port),
            (init_app(settings), api_port),
        ):
            runner = web.AppRunner(app, shutdown_timeout=2.0)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            runners.append(runner)
        yield f"http://127.0.0.1:{api_port}"
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


def _user(role: str) -> Any:
    return next(d for d in DEMO_USERS if d.role == role)


async def log_in(page: Any, url: str, role: str) -> None:
    user = _user(role)
    await page.goto(url + "/ui/login")
    await page.fill("#login", user.login)
    await page.fill("#password", user.password)
    await page.click("button[type=submit]")
    await page.wait_for_selector(".topbar")


async def _demo_client(conn: asyncpg.Connection) -> tuple[int, str, str]:
    """A client worth showing: several accounts and cases, a phone of theirs only (the
    call pops their card, not a choice of candidates): (id, surname, phone)."""
    row = await conn.fetchrow(
        """
        SELECT c.id, c.last_name, ct.phone FROM clients c
        JOIN contacts ct ON ct.client_id = c.id AND ct.is_active AND ct.phone IS NOT NULL
        WHERE NOT EXISTS (SELECT 1 FROM contacts o WHERE o.phone = ct.phone
                          AND o.client_id <> c.id)
        ORDER BY (SELECT count(*) FROM accounts a WHERE a.client_id = c.id)
                 + (SELECT count(*) FROM cases k WHERE k.client_id = c.id) DESC, c.id
        LIMIT 1
        """
    )
    if row is None:
        raise RuntimeError("the database has no demo clients: run `herald up` (or herald seed)")
    return row["id"], row["last_name"], row["phone"]


DEMO_RULE = "Борг понад 1000 грн → Фінансовий відділ"


async def _demo_rule(conn: asyncpg.Connection) -> int:
    """The demo rule of the designer (made once): topic Debt and debt > 1000 UAH ->
    priority high, group Finance, an SMS to the client."""
    for rule in await rule_store.list_rules(conn):
        if rule.name == DEMO_RULE:
            return rule.id
    template = await conn.fetchval(
        "SELECT id FROM message_templates WHERE name = 'Звернення зареєстровано'"
    )
    spec = msgspec.convert(
        {
            "name": DEMO_RULE,
            "trigger": {"type": "case_created"},
            "condition": {
                "kind": "and",
                "items": [
                    {"kind": "cond", "field": "category", "op": "under", "value": "billing.debt"},
                    {"kind": "cond", "field": "client.debt", "op": "gt", "value": 1000},
                ],
            },
            "actions": [
                {"type": "set_priority", "priority": "high"},
                {"type": "set_group", "group_code": "finance"},
                {"type": "send_message", "template_id": template, "channel_chain": ["sms"]},
            ],
            "is_active": True,
        },
        CaseRuleSpec,
    )
    rule = await rule_store.create_rule(conn, Actor(login="demo"), spec)
    return rule.id


async def take(settings: Settings, out: Path) -> list[Path]:
    """Walk the pages and write the PNGs; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    conn = await asyncpg.connect(settings.database_url)
    await init_connection(conn)
    try:
        await ensure_demo_users(conn, PasswordPolicy(settings.password_min_length))
        client_id, surname, phone = await _demo_client(conn)
        campaign_id = await campaigns.a_campaign(conn)
    finally:
        await conn.close()
    written: list[Path] = []

    async def shot(page: Any, name: str, settle: bool = True) -> None:
        if settle:
            await page.wait_for_load_state("networkidle")
        path = out / f"{name}.png"
        await page.screenshot(path=str(path))
        written.append(path)
        print(f"  {path}", flush=True)

    async with serving(settings) as url, chromium() as browser:
        context = await browser.new_context(viewport=VIEWPORT, locale="uk-UA")
        page = await context.new_page()
        await page.goto(url + "/ui/login")
        await shot(page, "01-login")
        await log_in(page, url, "operator_cc")
        await page.fill("#q", surname)
        await page.wait_for_selector("#results a.result")
        await shot(page, "02-search")
        await page.goto(f"{url}/ui/clients/{client_id}")
        await page.wait_for_selector("#timeline .tl-item, #timeline-empty")
        await shot(page, "03-card")
        await page.locator("#contacts").scroll_into_view_if_needed()
        await shot(page, "04-card-contacts")
        # VICIdial rings this operator: the card pops before the call is answered
        await page.goto(url + "/ui/search")
        await page.wait_for_selector("#live-state.on")
        async with aiohttp.ClientSession() as http:
            login = await http.post(
                url + "/api/v1/auth/login",
                json={
                    "login": _user("integration").login,
                    "password": _user("integration").password,
                },
            )
            token = (await login.json())["token"]
            call = {
                "call_id": f"SHOT{free_port()}",
                "phone_number": phone,
                "user": _user("operator_cc").login,
            }
            headers = {"Authorization": f"Bearer {token}"}
            await http.post(
                url + "/api/v1/cti/calls", headers=headers, json={"event": "ringing", **call}
            )
            await page.wait_for_selector("#client-id")
            await page.wait_for_selector("#timeline .tl-item, #timeline-empty")
            await shot(page, "05-incoming-call")
            # answered and finished: the call becomes a case in the queue
            for event in ("answered", "hung_up"):
                await http.post(
                    url + "/api/v1/cti/calls", headers=headers, json={"event": event, **call}
                )
        await page.goto(url + "/ui/cases")
        await shot(page, "06-cases")
        await page.goto(url + "/ui/account")
        await shot(page, "07-account")
        await page.click("button[lang=en]")
        await page.goto(f"{url}/ui/clients/{client_id}")
        await page.wait_for_selector("#timeline .tl-item, #timeline-empty")
        await shot(page, "08-card-en")
        await page.click("button[lang=uk]")
        await context.clear_cookies()
        # The service centre: a walk-in case
        await log_in(page, url, "operator_cos")
        await page.goto(f"{url}/ui/cases/new?client_id={client_id}")
        await page.fill("input[name=subject]", "Перевірка нарахувань за січень")
        await page.fill(
            "textarea[name=text]",
            "Клієнт просить перевірити нарахування за січень і надіслати акт звірки на e-mail.",
        )
        await shot(page, "09-case-new")
        await page.click("#register-case")
        await page.wait_for_selector("#case-number")
        case_number = (await page.text_content("#case-number") or "").strip()
        await shot(page, "10-case")
        await context.clear_cookies()
        await log_in(page, url, "supervisor")
        await shot(page, "11-supervisor-start")
        await context.clear_cookies()
        await log_in(page, url, "operator_cc")
        await page.goto(url + "/ui/tasks")
        await shot(page, "12-tasks")
        # Exports: the case list as CSV, then "My exports"
        await page.goto(url + "/ui/cases")
        async with page.expect_download():
            await page.click("form[data-export=cases] button[value=csv]")
        await page.goto(url + "/ui/exports")
        await shot(page, "13-exports")
        await page.goto(url + "/ui/reports/my?period=last_30_days")
        await page.wait_for_selector(".chart .uplot")
        await shot(page, "13-reports-my", settle=False)
        await context.clear_cookies()
        await log_in(page, url, "supervisor")
        for name, path in (
            ("14-reports-cases", "/ui/reports/cases?period=year&group_by=week"),
            ("15-reports-topics", "/ui/reports/cases?period=year&group_by=topic_root"),
            ("16-reports-team", "/ui/reports/team?period=last_30_days"),
            ("17-reports-messaging", "/ui/reports/messaging?period=year&group_by=source_channel"),
        ):
            await page.goto(url + path)
            await page.wait_for_selector(".chart .uplot")
            await shot(page, name, settle=False)
        await page.goto(url + "/ui/dashboards")
        mine = page.locator("a", has_text="Огляд супервізора")
        if await mine.count():
            await mine.first.click()
        else:
            await page.fill("input[name=name]", "Огляд супервізора")
            await page.click("form[action='/ui/dashboards'] button[type=submit]")
            form = page.locator("#add-widget")
            for kind, report, metric, group_by in (
                ("number", "backlog", "open_cases", ""),
                ("bar", "cases", "created", "channel"),
                ("table", "team", "resolved", ""),
                ("funnel", "messaging", "sent", ""),
            ):
                await form.locator("select[name=kind]").select_option(kind)
                await form.locator("select[name=report]").select_option(report)
                await form.locator("select[name=metric]").select_option(metric)
                await form.locator("select[name=group_by]").select_option(group_by)
                await form.locator("button[type=submit]").click()
                await page.wait_for_selector(f".widget[data-kind={kind}]")
        await page.wait_for_selector(".widget .uplot")
        await page.wait_for_selector(".widget-number")
        await shot(page, "18-dashboard", settle=False)
        # The rule designer (issue 15): the demo rule, and a dry run against the new case
        await context.clear_cookies()
        conn = await asyncpg.connect(settings.database_url)
        await init_connection(conn)
        try:
            rule_id = await _demo_rule(conn)
        finally:
            await conn.close()
        await log_in(page, url, "supervisor")
        await page.goto(f"{url}/ui/automation?rule={rule_id}")
        await page.wait_for_selector("#versions-table")
        await shot(page, "13-automation")
        await page.fill("input[name=case_number]", case_number)
        await page.click("#dry-run")
        await page.wait_for_selector("#dry-result .verdict:not(:empty)")
        await page.locator("#dry-result").scroll_into_view_if_needed()
        await shot(page, "14-automation-dry-run")
        await context.close()
        await screenshot_admin.supervisor_and_admin(browser, url, shot, log_in, VIEWPORT)
        await marketer.content_pages(browser, url, shot, log_in, client_id=client_id)
        await campaigns.campaign_pages(
            browser, url, shot, log_in, campaign_id=campaign_id, viewport=VIEWPORT
        )
        # The narrow, empty and error variants (herald/cli/screenshot_variants.py)
        conn = await asyncpg.connect(settings.database_url)
        await init_connection(conn)
        try:
            empty_id = await variants.empty_client(conn)
            case_id = await variants.a_case(conn)
        finally:
            await conn.close()
        await variants.narrow(
            browser, url, shot, log_in, client_id=client_id, surname=surname, case_id=case_id
        )
        await variants.empty_and_errors(
            browser, url, shot, log_in, empty_client_id=empty_id, viewport=VIEWPORT
        )
    return written


async def run(settings: Settings, out: Path) -> int:
    print(
        f"screenshots of the web UI into {out}/ (1440x900; 1024x768 and 400 px wide; "
        "empty and error states):",
        flush=True,
    )
    await take(settings, out)
    return 0
