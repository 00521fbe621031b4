"""What case rules hand over after their transaction (issue 15): webhooks and messages.

A rule's ``webhook`` and ``send_message`` actions write a ``case_rule_outbox`` row in
the case's transaction; this duty delivers them after the commit, so neither a slow or
failing receiver nor the send path ever holds up or undoes a case change. A row is
claimed with a lease (``next_attempt_at`` moved forward, ``attempts`` counted), so two
schedulers never hold one row at once. A webhook is signed (``providers.webhook``), has
a time limit, and is retried with a growing backoff until ``MAX_ATTEMPTS``; a message
becomes a realtime message (the worker applies consent, stop lists and quiet hours, as
for every case message). Each final outcome is journalled on the case.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import aio_pika
import asyncpg
import msgspec

from crm.cases import rule_store, store
from crm.cases.store import NewEvent
from dispatcher.realtime import messages as realtime
from dispatcher.realtime.case_notify import organisation_of
from dispatcher.realtime.case_replies import case_variables
from dispatcher.recipients import load_recipients
from herald import clock
from herald.audit import Actor
from herald.settings import Settings
from providers import webhook

log = logging.getLogger("herald.case_rule_outbox")
AUTOMATION = Actor(login="automation")
MAX_ATTEMPTS = 6
LEASE_SECONDS = 60
TIMEOUT_SECONDS = 5.0
_ENCODE = msgspec.json.Encoder()


def backoff(attempts: int) -> int:
    """Seconds before the next try after ``attempts`` failed ones: 10 s, 40 s, 160 s ..."""
    return int(min(3600, 10 * 4 ** (attempts - 1)))


_CLAIM = f"""
UPDATE case_rule_outbox o
SET attempts = o.attempts + 1, next_attempt_at = herald_now() + interval '{LEASE_SECONDS} seconds'
WHERE o.id IN (SELECT id FROM case_rule_outbox
               WHERE status = 'pending' AND next_attempt_at <= herald_now()
               ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING o.id, o.case_id, o.rule_id, o.kind, o.payload, o.attempts
"""


async def _finish(
    conn: asyncpg.Connection,
    row: asyncpg.Record,
    error: str | None,
    data: dict[str, Any],
    *,
    final: bool = False,
) -> None:
    """Record the try: sent, retried later, or failed for good (journalled)."""
    final = final or error is None or row["attempts"] >= MAX_ATTEMPTS
    await conn.execute(
        "UPDATE case_rule_outbox SET status = $2, last_error = $3, "
        "next_attempt_at = herald_now() + make_interval(secs => $4), "
        "sent_at = CASE WHEN $2 = 'sent' THEN herald_now() END WHERE id = $1",
        row["id"],
        "sent" if error is None else "failed" if final else "pending",
        error,
        float(backoff(row["attempts"])),
    )
    if final:
        await store.append_events(
            conn,
            AUTOMATION,
            row["case_id"],
            [
                NewEvent(
                    kind="automation",
                    body=row["kind"],
                    data={
                        "rule_id": row["rule_id"],
                        "outbox_id": row["id"],
                        "outcome": "sent" if error is None else "failed",
                        "attempts": row["attempts"],
                        "error": error,
                        **data,
                    },
                )
            ],
        )


async def _message(
    conn: asyncpg.Connection, row: asyncpg.Record, settings: Settings
) -> realtime.Work:
    payload = row["payload"]
    case = await store.get_case(conn, row["case_id"])
    found = (
        await load_recipients(conn, [case.client_id], organisation_of(settings))
        if case.client_id is not None
        else []
    )
    if case.client_id is None or not found or not found[0].phone:
        await _finish(conn, row, "the client has no phone", {}, final=True)
        return []
    created, work = await realtime.create(
        conn,
        [
            realtime.NewMessage(
                kind="trigger",
                client_id=case.client_id,
                account_id=case.account_id,
                template_id=payload["template_id"],
                template_version=payload["template_version"],
                channel_chain=list(payload["channel_chain"]),
                event_id=f"case-rule:{row['id']}",
                variables=await case_variables(conn, case),
            )
        ],
    )
    message_id = created[0].message_id
    await _finish(conn, row, None, {"message_id": message_id})
    await store.append_events(
        conn,
        AUTOMATION,
        case.id,
        [
            NewEvent(
                kind="notification",
                channel=payload["channel_chain"][0],
                direction="out",
                body=f"case rule {row['rule_id']}",
                data={
                    "case_rule_id": row["rule_id"],
                    "message_id": message_id,
                    "template_id": payload["template_id"],
                    "template_version": payload["template_version"],
                    "channel_chain": payload["channel_chain"],
                },
            )
        ],
    )
    return work


async def _claim(pool: asyncpg.Pool, limit: int) -> Sequence[asyncpg.Record]:
    async with pool.acquire() as conn:
        rows: Sequence[asyncpg.Record] = await conn.fetch(_CLAIM, limit)
        return rows


async def deliver_due(
    pool: asyncpg.Pool,
    channel: aio_pika.abc.AbstractChannel | None,
    settings: Settings,
    client: webhook.WebhookClient,
    *,
    limit: int = 50,
    timeout: float = TIMEOUT_SECONDS,
) -> int:
    """Deliver the due outbox rows; returns how many were tried."""
    rows = await _claim(pool, limit)
    if not rows:
        return 0
    async with pool.acquire() as conn:
        secret = await rule_store.webhook_secret(conn)
    work: realtime.Work = []
    for row in rows:
        try:
            if row["kind"] == "webhook":
                body = _ENCODE.encode(row["payload"]["body"])
                stamp = str(int(clock.time()))
                error = await client.post_signed(
                    row["payload"]["url"], body, secret, stamp, timeout=timeout
                )
                async with pool.acquire() as conn, conn.transaction():
                    await _finish(conn, row, error, {"url": row["payload"]["url"]})
            else:
                async with pool.acquire() as conn, conn.transaction():
                    work += await _message(conn, row, settings)
        except Exception:  # one bad row must not stop the others; its lease runs out
            log.exception("case rule outbox %s failed", row["id"])
    if work and channel is not None:
        await realtime.publish(channel, settings, work)
    return len(rows)
