"""The demo stand's workspace configuration, so that Blocks 1-3 of the demo scenario can be
shown on a fresh ``herald up``: message templates an operator may send from the card
(mobile app link, service-centre address and hours, bank details; SMS and Viber), a
business calendar, SLA policies by case type and priority, escalation rules, the demo
operators in the case groups, and the optional client notifications switched on.

Idempotent: each item is looked up by its name and created only when it is missing, so an
administrator's later changes stay; the one-off switches (notification rules, group
members) happen only on the run that creates the demo calendar. Development only, like
the demo users (``herald up`` and ``herald seed`` call it).
"""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from crm.cases import calendars, groups, sla_config
from crm.cases.calendars import BusinessCalendarSpec
from crm.cases.sla_config import EscalationRuleSpec, SlaPolicySpec
from crm.cases.types import CaseType, Priority
from dispatcher.realtime import case_notify, operator_send
from dispatcher.realtime.case_notify import NotificationRuleSpec
from dispatcher.templating import store as template_store
from dispatcher.templating.templates import TemplateDraft, TemplateEngine
from herald.audit import Actor

DEMO = Actor(login="demo-setup")

# Fictional bank details of the demo supplier: replace them in the template library.
_BANK = (
    "Отримувач: ТОВ «Газопостачальна компанія», ЄДРПОУ 40121452, "
    "IBAN UA213223130000026007233566001, АТ «Ощадбанк». "
    "Призначення: оплата за газ, ОР {{ or_number }}"
)

# name -> (topic, variants). SMS texts stay within two Cyrillic segments.
TEMPLATES: dict[str, tuple[str, dict[str, Any]]] = {
    "Посилання на мобільний застосунок": (
        "service",
        {
            "sms": {
                "text": "Застосунок для оплати та показників: {{ app_url }} ОР {{ or_number }}"
            },
            "viber": {
                "text": "{{ first_name }}, передавайте показники, сплачуйте за газ і "
                "стежте за рахунком у мобільному застосунку. Ваш особовий рахунок: "
                "{{ or_number }}.",
                "button_text": "Завантажити",
                "button_url": "{{ app_url }}",
            },
        },
    ),
    "Адреса та графік роботи ЦОС": (
        "service",
        {
            "sms": {"text": "ЦОС: {{ service_centre }}. Тел. {{ contact_phone }}"},
            "viber": {
                "text": "{{ first_name }}, центр обслуговування клієнтів: "
                "{{ service_centre }}. Контакт-центр: {{ contact_phone }}."
            },
        },
    ),
    "Банківські реквізити для оплати": (
        "billing",
        {
            "sms": {
                "text": "IBAN UA213223130000026007233566001, ЄДРПОУ 40121452, "
                "призначення: газ, ОР {{ or_number }}"
            },
            "viber": {
                "text": "{{ first_name }}, реквізити для оплати за газ. " + _BANK + ".",
                "button_text": "Сплатити онлайн",
                "button_url": "{{ payment_url }}",
            },
        },
    ),
}

CALENDAR = "Контакт-центр і ЦОС (демо)"
_WORKDAY = [{"start": "08:00", "end": "20:00"}]
CALENDAR_WEEK = {
    "mon": _WORKDAY,
    "tue": _WORKDAY,
    "wed": _WORKDAY,
    "thu": _WORKDAY,
    "fri": _WORKDAY,
    "sat": [{"start": "09:00", "end": "15:00"}],
}

# (name, case type, priority, first response, resolution) in business minutes of the
# calendar (a weekday has 720). The most specific policy of a case wins.
SLA_POLICIES: tuple[tuple[str, CaseType | None, Priority | None, int, int], ...] = (
    ("Базовий SLA", None, None, 120, 1440),
    ("Технічні звернення", "technical", None, 60, 720),
    ("Фінансові звернення", "financial", None, 120, 2160),
    ("Інформаційні звернення", "informational", None, 60, 480),
    ("Високий пріоритет", None, "high", 30, 480),
    ("Терміново", None, "urgent", 15, 120),
    ("Технічні, терміново (аварійні)", "technical", "urgent", 10, 60),
)

ESCALATIONS: tuple[dict[str, Any], ...] = (
    {
        "name": "Ризик порушення SLA: сповістити супервізора",
        "on_level": "warning",
        "notify_supervisors": True,
    },
    {
        "name": "Порушення SLA: супервізор і вищий пріоритет",
        "on_level": "breached",
        "notify_supervisors": True,
        "raise_priority": "step",
    },
)

# Demo login -> case groups it works in (the back-office groups included, so that cases
# routed there can be taken in the demo).
GROUP_MEMBERS = {
    "operator.cc": ("cc_l1", "cc_l2", "technical", "finance"),
    "operator.cos": ("service_centre", "finance"),
}

# Client notifications the migration offers switched off; the demo shows them.
NOTIFICATIONS_ON = ("Змінено строк звернення", "Надано відповідь")


class DemoSetup(msgspec.Struct):
    """What a run created (names), for the command's output and the tests."""

    templates: list[str] = []
    calendar: bool = False
    sla_policies: list[str] = []
    escalation_rules: list[str] = []
    group_members: list[str] = []
    notifications_on: list[str] = []


async def _templates(conn: asyncpg.Connection, engine: TemplateEngine, done: DemoSetup) -> None:
    for name, (topic, variants) in TEMPLATES.items():
        found = await conn.fetchval("SELECT id FROM message_templates WHERE name = $1", name)
        if found is None:
            draft = msgspec.convert({"name": name, "variants": variants}, TemplateDraft)
            template, _ = await template_store.create(
                conn, DEMO, engine, draft=draft, topic=topic, urgent=False
            )
            await operator_send.set_allowed(conn, DEMO, template.id, True)
            done.templates.append(name)


async def _sla(conn: asyncpg.Connection, calendar_id: int, done: DemoSetup) -> None:
    have = {p.name for p in await sla_config.list_policies(conn)}
    scopes = {
        (p.case_type, p.priority, p.category_id) for p in await sla_config.list_policies(conn)
    }
    for name, case_type, priority, first, resolution in SLA_POLICIES:
        if name in have or (case_type, priority, None) in scopes:
            continue
        await sla_config.create_policy(
            conn,
            DEMO,
            SlaPolicySpec(
                name=name,
                calendar_id=calendar_id,
                case_type=case_type,
                priority=priority,
                first_response_minutes=first,
                resolution_minutes=resolution,
            ),
        )
        done.sla_policies.append(name)
    rules = {r.name for r in await sla_config.list_rules(conn)}
    for spec in ESCALATIONS:
        if spec["name"] not in rules:
            await sla_config.create_rule(conn, DEMO, msgspec.convert(spec, EscalationRuleSpec))
            done.escalation_rules.append(spec["name"])


async def _first_run(conn: asyncpg.Connection, done: DemoSetup) -> None:
    """Group members and notifications: once, so that an admin's later changes stay."""
    users = {
        r["login"]: r["id"]
        for r in await conn.fetch(
            "SELECT id, login FROM users WHERE login = ANY($1::text[]) AND is_active",
            list(GROUP_MEMBERS),
        )
    }
    wanted: dict[str, list[int]] = {}
    for login, codes in GROUP_MEMBERS.items():
        if login in users:
            for code in codes:
                wanted.setdefault(code, []).append(users[login])
    for group in await groups.list_groups(conn):
        if group.code in wanted:
            members = sorted({*group.member_ids, *wanted[group.code]})
            if members != sorted(group.member_ids):
                await groups.set_members(conn, DEMO, group.code, members)
                done.group_members.append(group.code)
    for rule in await case_notify.list_rules(conn):
        if rule.name in NOTIFICATIONS_ON and not rule.is_active:
            await case_notify.update_rule(
                conn,
                DEMO,
                rule.id,
                NotificationRuleSpec(
                    # A stored rule's event and chain are str; they hold what its spec allowed.
                    name=rule.name,
                    event=rule.event,  # type: ignore[arg-type]  # see above
                    template_id=rule.template_id,
                    template_version=rule.template_version,
                    to_status=rule.to_status,
                    channel_chain=rule.channel_chain,  # type: ignore[arg-type]  # as above
                    is_active=True,
                ),
            )
            done.notifications_on.append(rule.name)


async def ensure_demo_setup(
    conn: asyncpg.Connection, engine: TemplateEngine | None = None
) -> DemoSetup:
    """Create what is missing of the demo configuration; returns what was created."""
    done = DemoSetup()
    engine = engine or TemplateEngine()
    async with conn.transaction():
        await _templates(conn, engine, done)
        calendar_id = await conn.fetchval(
            "SELECT id FROM business_calendars WHERE name = $1", CALENDAR
        )
        if calendar_id is None:
            spec = msgspec.convert({"name": CALENDAR, "week": CALENDAR_WEEK}, BusinessCalendarSpec)
            calendar_id = (await calendars.create_calendar(conn, DEMO, spec)).id
            done.calendar = True
            await _first_run(conn, done)
        await _sla(conn, calendar_id, done)
    return done
