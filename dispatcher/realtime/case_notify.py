"""Client updates (issue 5 point 7): case events -> admin-defined rules -> realtime messages.

Derived from case_events, not from the code paths that change a case: the insert
trigger of migration 0023 queues every event a rule may react to in the inserting
transaction, so a status changed by the API, an automation or an escalation, a deadline
set by the SLA evaluator, an info request and an operator's reply all reach this duty.
One pass takes queued events in id order (locked, so two schedulers never share one),
and for each active rule that matches writes, in one transaction: the case_notifications
row (primary key: event and rule), the realtime message (or the reason it was skipped:
an anonymous case, a client without a phone), a case_events row kind 'notification',
and the removal of the queue row. The realtime message ids are those of the rows made
here ('t<row>:<client>:<step>'), one per (event, rule): a re-run finds the
case_notifications row and sends nothing. The send rules (consent, stop list, quiet
hours) are the worker's, and a refusal shows as the message's 'skipped' status.

Event kinds: created -> case_registered; status -> status_changed (a rule may name the
status reached); deadline -> deadline_changed (not a re-plan after an admin's calendar or
policy change); info_request -> info_needed; an outgoing
e-mail reply -> answer_given (a reply by SMS/Viber already is the answer on the phone,
and the e-mail carrying an info request is not an answer).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Annotated, Literal

import aio_pika
import asyncpg
import msgspec
from msgspec import Meta

from crm.cases import store
from crm.cases.store import NewEvent
from dispatcher.realtime import messages as realtime
from dispatcher.realtime import operator_send
from dispatcher.realtime.case_replies import case_variables, deadline_text
from dispatcher.recipients import Organisation, load_recipients
from herald import audit
from herald.audit import Actor, Change
from herald.bounds import Id, Version
from herald.errors import InvalidInput, NotFound
from herald.settings import Settings

NotifyEvent = Literal[
    "case_registered", "status_changed", "answer_given", "deadline_changed", "info_needed"
]
NotifyChannel = Literal["viber", "sms"]
NOTIFIER = Actor(login="notifications")
log = logging.getLogger("herald.case_notify")


class NotificationRuleSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    event: NotifyEvent
    template_id: Id
    template_version: Version | None = None
    to_status: str | None = None
    channel_chain: Annotated[list[NotifyChannel], Meta(min_length=1, max_length=2)] = msgspec.field(
        default_factory=lambda: ["viber", "sms"]
    )
    is_active: bool = True


class NotificationRule(msgspec.Struct, frozen=True):
    id: int
    name: str
    event: str
    to_status: str | None
    template_id: int
    template_version: int
    channel_chain: list[str]
    is_active: bool
    created_at: dt.datetime
    updated_at: dt.datetime


_COLUMNS = (
    "id, name, event, to_status, template_id, template_version, channel_chain, "
    "is_active, created_at, updated_at"
)


async def list_rules(conn: asyncpg.Connection) -> list[NotificationRule]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM case_notification_rules ORDER BY id")
    return [NotificationRule(**dict(r)) for r in rows]


async def _checked(conn: asyncpg.Connection, spec: NotificationRuleSpec) -> tuple[int, list[str]]:
    """The template version the rule pins and its chain, or InvalidInput naming the field."""
    if len(set(spec.channel_chain)) != len(spec.channel_chain):
        raise InvalidInput("channel_chain", "a channel may appear only once in the chain")
    if spec.to_status is not None:
        if spec.event != "status_changed":
            raise InvalidInput("to_status", "only a status_changed rule names a status")
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM case_statuses WHERE code = $1)", spec.to_status
        ):
            raise InvalidInput("to_status", f"no case status {spec.to_status!r}")
    version = spec.template_version or await conn.fetchval(
        "SELECT current_version FROM message_templates WHERE id = $1", spec.template_id
    )
    if version is None:
        raise InvalidInput("template_id", f"template {spec.template_id} does not exist")
    variants = await conn.fetchval(
        "SELECT variants FROM message_template_versions WHERE template_id = $1 AND version = $2",
        spec.template_id,
        version,
    )
    if variants is None:
        raise InvalidInput(
            "template_version", f"template {spec.template_id} has no version {version}"
        )
    missing = [c for c in spec.channel_chain if not (variants or {}).get(c)]
    if missing:
        raise InvalidInput("channel_chain", f"the template has no text for: {', '.join(missing)}")
    return version, list(spec.channel_chain)


def _values(rule: NotificationRule) -> dict[str, object]:
    return {
        "name": rule.name,
        "event": rule.event,
        "to_status": rule.to_status,
        "template_id": rule.template_id,
        "template_version": rule.template_version,
        "channel_chain": rule.channel_chain,
        "is_active": rule.is_active,
    }


async def create_rule(
    conn: asyncpg.Connection, actor: Actor, spec: NotificationRuleSpec
) -> NotificationRule:
    async with conn.transaction():
        version, chain = await _checked(conn, spec)
        row = await conn.fetchrow(
            f"INSERT INTO case_notification_rules (name, event, to_status, template_id, "
            f"template_version, channel_chain, is_active, created_by) "
            f"VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_COLUMNS}",
            spec.name,
            spec.event,
            spec.to_status,
            spec.template_id,
            version,
            chain,
            spec.is_active,
            actor.id,
        )
        rule = NotificationRule(**dict(row))
        await audit.record(
            conn,
            actor,
            [Change("case_notification_rule", str(rule.id), "create", None, None, _values(rule))],
        )
        return rule


async def update_rule(
    conn: asyncpg.Connection, actor: Actor, rule_id: int, spec: NotificationRuleSpec
) -> NotificationRule:
    async with conn.transaction():
        old = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM case_notification_rules WHERE id = $1 FOR UPDATE", rule_id
        )
        if old is None:
            raise NotFound(f"no notification rule {rule_id}")
        version, chain = await _checked(conn, spec)
        row = await conn.fetchrow(
            f"UPDATE case_notification_rules SET name = $2, event = $3, to_status = $4, "
            f"template_id = $5, template_version = $6, channel_chain = $7, is_active = $8, "
            f"updated_at = herald_now() WHERE id = $1 RETURNING {_COLUMNS}",
            rule_id,
            spec.name,
            spec.event,
            spec.to_status,
            spec.template_id,
            version,
            chain,
            spec.is_active,
        )
        rule = NotificationRule(**dict(row))
        await audit.record(
            conn,
            actor,
            audit.field_changes(
                "case_notification_rule",
                rule_id,
                _values(NotificationRule(**dict(old))),
                _values(rule),
            ),
        )
        return rule


async def deactivate_rule(conn: asyncpg.Connection, actor: Actor, rule_id: int) -> None:
    """Rules are switched off, not deleted: the notifications made keep naming their rule."""
    async with conn.transaction():
        old = await conn.fetchval(
            "SELECT is_active FROM case_notification_rules WHERE id = $1 FOR UPDATE", rule_id
        )
        if old is None:
            raise NotFound(f"no notification rule {rule_id}")
        if old:
            await conn.execute(
                "UPDATE case_notification_rules SET is_active = false, "
                "updated_at = herald_now() WHERE id = $1",
                rule_id,
            )
            await audit.record(
                conn,
                actor,
                [
                    Change(
                        "case_notification_rule", str(rule_id), "update", "is_active", True, False
                    )
                ],
            )


# -- the duty ------------------------------------------------------------------------------

_QUEUED = """
SELECT q.event_id, e.case_id, e.kind, e.to_status, e.direction, e.channel, e.body, e.data
FROM case_notify_queue q JOIN case_events e ON e.id = q.event_id
ORDER BY q.event_id LIMIT $1 FOR UPDATE OF q SKIP LOCKED
"""


def event_name(row: asyncpg.Record) -> str | None:
    kind = row["kind"]
    if kind == "created":
        return "case_registered"
    if kind == "status":
        return "status_changed"
    data = row["data"] if isinstance(row["data"], dict) else {}
    if kind == "deadline":
        # A deadline a person moved, not the re-plan of every open case after an admin
        # changed a calendar or a policy (crm.cases.sla_replan): no mass notification.
        return None if data.get("replanned") else "deadline_changed"
    if kind == "info_request":
        return "info_needed"
    if (
        kind == "message"
        and row["direction"] == "out"
        and row["channel"] == "email"
        and not data.get("info_request")
    ):
        return "answer_given"
    return None


def _matches(rule: asyncpg.Record, name: str, row: asyncpg.Record) -> bool:
    return rule["event"] == name and (
        rule["to_status"] is None or rule["to_status"] == row["to_status"]
    )


async def _one_event(
    conn: asyncpg.Connection,
    row: asyncpg.Record,
    rules: Sequence[asyncpg.Record],
    organisation: Organisation,
) -> tuple[list[tuple[int, NewEvent]], realtime.Work]:
    name = event_name(row)
    matching = [r for r in rules if name is not None and _matches(r, name, row)]
    if not matching:
        return [], []
    case = await store.get_case(conn, row["case_id"])
    phone = None
    if case.client_id is not None:
        found = await load_recipients(conn, [case.client_id], organisation)
        phone = found[0].phone if found else None
    skipped = "anonymous" if case.client_id is None else None if phone else "no_phone"
    text = row["body"] or ""
    variables = await case_variables(conn, case, text, status=row["to_status"])
    if row["kind"] == "deadline":
        variables["case_deadline"] = deadline_text(row["data"])
    events: list[tuple[int, NewEvent]] = []
    work: realtime.Work = []
    for rule in matching:
        inserted = await conn.fetchval(
            "INSERT INTO case_notifications (event_id, rule_id, case_id, skipped) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true",
            row["event_id"],
            rule["id"],
            case.id,
            skipped,
        )
        if not inserted:
            continue  # handled before: never a second message
        base = {
            "rule_id": rule["id"],
            "event_id": row["event_id"],
            "event": name,
            "template_id": rule["template_id"],
            "template_version": rule["template_version"],
        }
        if skipped or case.client_id is None:
            events.append(
                (
                    case.id,
                    NewEvent(
                        kind="notification", body=rule["name"], data={**base, "skipped": skipped}
                    ),
                )
            )
            continue
        created, more = await realtime.create(
            conn,
            [
                realtime.NewMessage(
                    kind="trigger",
                    client_id=case.client_id,
                    account_id=case.account_id,
                    template_id=rule["template_id"],
                    template_version=rule["template_version"],
                    channel_chain=list(rule["channel_chain"]),
                    event_id=f"case-event:{row['event_id']}",
                    variables=variables,
                )
            ],
        )
        work += more
        await conn.execute(
            "UPDATE case_notifications SET message_id = $3 WHERE event_id = $1 AND rule_id = $2",
            row["event_id"],
            rule["id"],
            created[0].message_id,
        )
        events.append(
            (
                case.id,
                NewEvent(
                    kind="notification",
                    channel=rule["channel_chain"][0],
                    direction="out",
                    body=rule["name"],
                    data={
                        **base,
                        "message_id": created[0].message_id,
                        "channel_chain": list(rule["channel_chain"]),
                    },
                ),
            )
        )
    return events, work


async def run_duty(
    pool: asyncpg.Pool,
    channel: aio_pika.abc.AbstractChannel,
    settings: Settings,
    *,
    limit: int = 200,
) -> int:
    """Notify for queued case events until the queue is empty; returns events handled."""
    organisation = organisation_of(settings)
    total = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_QUEUED, limit)
            if not rows:
                return total
            rules = await conn.fetch(
                "SELECT id, name, event, to_status, template_id, template_version, channel_chain "
                "FROM case_notification_rules WHERE is_active ORDER BY id"
            )
            events: list[tuple[int, NewEvent]] = []
            work: realtime.Work = []
            for row in rows:
                try:
                    async with conn.transaction():  # a savepoint: one bad event, not the batch
                        more_events, more_work = await _one_event(conn, row, rules, organisation)
                except Exception:  # logged and dropped, or it would block the queue forever
                    log.exception("case event %s: notification failed", row["event_id"])
                    continue
                events += more_events
                work += more_work
            await store.append_many(conn, NOTIFIER, events)
            await conn.execute(
                "DELETE FROM case_notify_queue WHERE event_id = ANY($1::bigint[])",
                [r["event_id"] for r in rows],
            )
        await realtime.publish(channel, settings, work)
        total += len(rows)
        if len(rows) < limit:
            return total


def organisation_of(settings: Settings) -> Organisation:
    return Organisation(
        service_centre=settings.org_service_centre,
        contact_phone=settings.org_contact_phone,
        cabinet_url=settings.org_cabinet_url,
        app_url=settings.org_app_url,
        payment_url=settings.org_payment_url,
    )


class CaseNotification(msgspec.Struct, frozen=True):
    """A notification of a case with the latest delivery status of its message."""

    event_id: int
    rule_id: int
    message_id: str | None
    skipped: str | None
    status: str | None
    channel: str | None
    created_at: dt.datetime


async def of_case(conn: asyncpg.Connection, case_id: int) -> list[CaseNotification]:
    rows = await conn.fetch(
        "SELECT event_id, rule_id, message_id, skipped, created_at FROM case_notifications "
        "WHERE case_id = $1 ORDER BY event_id, rule_id",
        case_id,
    )
    found = []
    for r in rows:
        status = channel = None
        if r["message_id"] is not None:
            message = await operator_send.message_status(conn, r["message_id"])
            status, channel = message.status, message.channel
        found.append(
            CaseNotification(
                r["event_id"],
                r["rule_id"],
                r["message_id"],
                r["skipped"],
                status,
                channel,
                r["created_at"],
            )
        )
    return found
