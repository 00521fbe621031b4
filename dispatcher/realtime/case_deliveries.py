"""Delivery status of what a case sent its client, per event of the case's thread.

A case event that sent something names it in its data: an e-mail reply its outbox row
(``outbox_id``: pending, then sent or failed as SMTP answers), an SMS/Viber reply or a
client notification its realtime message (``message_id``: queued, sent, delivered, read,
failed...), a notification not sent its reason (``skipped``: anonymous case, no phone).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import asyncpg
import msgspec

from crm.cases.types import CaseEvent
from dispatcher.realtime import operator_send
from herald.errors import HeraldError

# Statuses after which nothing changes any more (a read receipt may still follow
# "delivered" on Viber, but the message has arrived).
FINAL = frozenset({"delivered", "read", "failed", "skipped", "converted"})


class Delivery(msgspec.Struct, frozen=True):
    """``status``: the e-mail outbox's (pending, sent, failed) or the message's latest;
    ``channel``: where it went (or is going); ``final``: no later change is expected."""

    event_id: int
    status: str
    channel: str | None = None
    reason: str | None = None
    final: bool = False


def _data(event: CaseEvent) -> dict[str, Any]:
    return event.data if isinstance(event.data, dict) else {}


def sends(event: CaseEvent) -> bool:
    """Whether the event sent (or meant to send) something to the client."""
    data = _data(event)
    return (
        event.kind in ("message", "notification")
        and event.direction != "in"
        and ("outbox_id" in data or "message_id" in data or "skipped" in data)
    )


async def delivery(conn: asyncpg.Connection, event: CaseEvent) -> Delivery | None:
    """The delivery of one event (None when it sent nothing)."""
    found = await deliveries(conn, [event])
    return found.get(event.id)


async def deliveries(conn: asyncpg.Connection, events: Iterable[CaseEvent]) -> dict[int, Delivery]:
    """The delivery of each event that sent something, by event id."""
    out: dict[int, Delivery] = {}
    outbox: dict[int, int] = {}
    for event in events:
        if not sends(event):
            continue
        data = _data(event)
        if isinstance(data.get("outbox_id"), int):
            outbox[data["outbox_id"]] = event.id
        elif isinstance(data.get("message_id"), str):
            try:
                found = await operator_send.message_status(conn, data["message_id"])
            except HeraldError:
                continue
            reason = next((e.reason for e in reversed(found.events) if e.reason), None)
            out[event.id] = Delivery(
                event.id,
                found.status,
                found.channel or event.channel,
                reason,
                found.status in FINAL,
            )
        elif data.get("skipped"):
            out[event.id] = Delivery(event.id, "skipped", None, str(data["skipped"]), True)
    if outbox:
        for r in await conn.fetch(
            "SELECT id, status, last_error FROM case_email_outbox WHERE id = ANY($1::bigint[])",
            list(outbox),
        ):
            status = r["status"]
            out[outbox[r["id"]]] = Delivery(
                outbox[r["id"]], status, "email", r["last_error"], status in ("sent", "failed")
            )
    return out
