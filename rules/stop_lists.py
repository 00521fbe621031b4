"""Stop lists (IC-08): clients or whole segments that never receive some topics.

An entry blocks one client, or every member of one segment, from the given topics (all
topics when ``topics`` is None) between ``valid_from`` and ``valid_until``. A blocked
client is skipped with ``stop_list`` even when a campaign includes them, on every
channel: the fallback chain ends there.

Segment membership belongs to the segments module (``crm.segments.membership``); the
batch check asks the caller's ``SegmentMembership`` which clients of the batch are in the
listed segments. Without one, a batch meeting a segment entry raises
``MembershipUnavailable`` rather than send to clients who may be blocked.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Protocol

import asyncpg
import msgspec

from herald import audit, clock
from herald.errors import HeraldError, InvalidInput, NotFound
from herald.exports import ExportQuery
from rules.decision import STOP_LIST, Skip


class MembershipUnavailable(HeraldError):
    """A segment entry applies but no segment membership was given to resolve it."""

    code = "segment-membership-unavailable"


class SegmentMembership(Protocol):
    """Answers which clients belong to segments; implemented by the segments module."""

    async def members_among(
        self, segment_ids: Sequence[int], client_ids: Sequence[int]
    ) -> set[int]:
        """The clients of ``client_ids`` that belong to at least one of ``segment_ids``."""
        ...


class StopListEntry(msgspec.Struct, frozen=True):
    id: int
    client_id: int | None
    segment_id: int | None
    topics: list[str] | None
    reason: str
    valid_from: dt.datetime
    valid_until: dt.datetime | None
    created_by: str
    created_by_id: int | None
    created_at: dt.datetime


_COLUMNS = (
    "id, client_id, segment_id, topics, reason, valid_from, valid_until, "
    "created_by, created_by_id, created_at"
)

_ACTIVE_FOR_BATCH = """
SELECT client_id, NULL::bigint AS segment_id FROM stop_list_entries
WHERE client_id = ANY($1::bigint[])
  AND (topics IS NULL OR $2 = ANY(topics))
  AND valid_from <= $3 AND (valid_until IS NULL OR valid_until > $3)
UNION ALL
SELECT NULL, segment_id FROM stop_list_entries
WHERE segment_id IS NOT NULL
  AND (topics IS NULL OR $2 = ANY(topics))
  AND valid_from <= $3 AND (valid_until IS NULL OR valid_until > $3)
"""


async def blocked_clients(
    conn: asyncpg.Connection,
    client_ids: Sequence[int],
    topic: str,
    *,
    now: dt.datetime | None = None,
    membership: SegmentMembership | None = None,
) -> set[int]:
    """The clients of the batch an active entry blocks from ``topic``: one query (+ one membership call)."""
    at = now or clock.now()
    rows = await conn.fetch(_ACTIVE_FOR_BATCH, list(client_ids), topic, at)
    blocked = {r["client_id"] for r in rows if r["client_id"] is not None}
    segments = sorted({r["segment_id"] for r in rows if r["segment_id"] is not None})
    if segments:
        if membership is None:
            raise MembershipUnavailable(
                f"stop-list entries for segments {segments} apply to topic {topic!r}, "
                "but no segment membership was given to resolve them"
            )
        rest = [c for c in client_ids if c not in blocked]
        if rest:
            blocked |= await membership.members_among(segments, rest)
    return blocked


async def check(
    conn: asyncpg.Connection,
    client_ids: Sequence[int],
    topic: str,
    *,
    now: dt.datetime | None = None,
    membership: SegmentMembership | None = None,
) -> dict[int, Skip]:
    """The batch check: blocked clients, skipped with ``stop_list``."""
    blocked = await blocked_clients(conn, client_ids, topic, now=now, membership=membership)
    return dict.fromkeys(blocked, STOP_LIST)


async def _check_topics(conn: asyncpg.Connection, topics: Sequence[str] | None) -> list[str] | None:
    if topics is None:
        return None
    wanted = sorted(set(topics))
    if not wanted:
        raise InvalidInput("topics", "give at least one topic, or none at all for every topic")
    known = {
        r["code"]
        for r in await conn.fetch(
            "SELECT code FROM message_topics WHERE code = ANY($1::text[])", wanted
        )
    }
    unknown = [t for t in wanted if t not in known]
    if unknown:
        raise InvalidInput("topics", f"unknown topic(s): {', '.join(unknown)}")
    return wanted


def _journal_value(entry: StopListEntry) -> dict[str, object]:
    return {
        "client_id": entry.client_id,
        "segment_id": entry.segment_id,
        "topics": entry.topics,
        "reason": entry.reason,
        "valid_from": entry.valid_from.isoformat(),
        "valid_until": entry.valid_until.isoformat() if entry.valid_until else None,
    }


async def add_entry(
    conn: asyncpg.Connection,
    actor: audit.Actor,
    *,
    reason: str,
    client_id: int | None = None,
    segment_id: int | None = None,
    topics: Sequence[str] | None = None,
    valid_from: dt.datetime | None = None,
    valid_until: dt.datetime | None = None,
) -> StopListEntry:
    """Block a client or a segment (exactly one) from ``topics`` (None: all); journalled."""
    if (client_id is None) == (segment_id is None):
        raise InvalidInput("client_id", "give either client_id or segment_id, not both or neither")
    if segment_id is not None and segment_id <= 0:
        raise InvalidInput("segment_id", "must be a positive integer")
    reason = reason.strip()
    if not 1 <= len(reason) <= 500:
        raise InvalidInput("reason", "a reason of 1 to 500 characters is required")
    for name, value in (("valid_from", valid_from), ("valid_until", valid_until)):
        if value is not None and value.tzinfo is None:
            raise InvalidInput(name, "must carry a time zone")
    if valid_until is not None and valid_until <= (valid_from or clock.now()):
        raise InvalidInput("valid_until", "must be later than valid_from (or now)")
    async with conn.transaction():
        checked = await _check_topics(conn, topics)
        try:
            row = await conn.fetchrow(
                f"""
                INSERT INTO stop_list_entries (client_id, segment_id, topics, reason, valid_from,
                                               valid_until, created_by, created_by_id)
                VALUES ($1, $2, $3, $4, coalesce($5, herald_now()), $6, $7, $8)
                RETURNING {_COLUMNS}
                """,
                client_id,
                segment_id,
                checked,
                reason,
                valid_from,
                valid_until,
                actor.login,
                actor.id,
            )
        except asyncpg.ForeignKeyViolationError:
            raise InvalidInput("client_id", f"no client {client_id}") from None
        entry = StopListEntry(**dict(row))
        await audit.record(
            conn,
            actor,
            [
                audit.Change(
                    "stop_list_entry", str(entry.id), "create", None, None, _journal_value(entry)
                )
            ],
        )
    return entry


async def remove_entry(
    conn: asyncpg.Connection, actor: audit.Actor, entry_id: int
) -> StopListEntry:
    """Delete an entry (the journal keeps what it was); NotFound if there is none."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"DELETE FROM stop_list_entries WHERE id = $1 RETURNING {_COLUMNS}", entry_id
        )
        if row is None:
            raise NotFound(f"no stop-list entry {entry_id}")
        entry = StopListEntry(**dict(row))
        await audit.record(
            conn,
            actor,
            [
                audit.Change(
                    "stop_list_entry", str(entry.id), "delete", None, _journal_value(entry), None
                )
            ],
        )
    return entry


EXPORT_COLUMNS = (
    "id",
    "client_id",
    "segment_id",
    "topics",
    "reason",
    "valid_from",
    "valid_until",
    "created_by",
    "created_at",
)


def export_query(*, active_at: dt.datetime | None) -> ExportQuery:
    """The entries as the stop-lists page lists them (in force at ``active_at``, or all
    with None), newest first; times in the business time zone, topics comma-separated
    (empty: every topic)."""
    local = "to_char({} AT TIME ZONE herald_business_tz(), 'YYYY-MM-DD HH24:MI:SS')"
    return ExportQuery(
        f"""
        SELECT id, client_id, segment_id, array_to_string(topics, ', ') AS topics, reason,
               {local.format("valid_from")} AS valid_from,
               {local.format("valid_until")} AS valid_until,
               created_by, {local.format("created_at")} AS created_at
        FROM stop_list_entries
        WHERE $1::timestamptz IS NULL
           OR (valid_from <= $1 AND (valid_until IS NULL OR valid_until > $1))
        ORDER BY id DESC
        """,
        (active_at,),
        EXPORT_COLUMNS,
        title="stop list",
    )


async def list_entries(
    conn: asyncpg.Connection,
    *,
    client_id: int | None = None,
    segment_id: int | None = None,
    active_at: dt.datetime | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[StopListEntry]:
    """Entries, oldest first, filtered by client, segment or validity at a moment; keyset by id."""
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM stop_list_entries
        WHERE ($1::bigint IS NULL OR client_id = $1)
          AND ($2::bigint IS NULL OR segment_id = $2)
          AND ($3::timestamptz IS NULL
               OR (valid_from <= $3 AND (valid_until IS NULL OR valid_until > $3)))
          AND id > coalesce($4::bigint, 0)
        ORDER BY id
        LIMIT $5
        """,
        client_id,
        segment_id,
        active_at,
        after_id,
        limit,
    )
    return [StopListEntry(**dict(r)) for r in rows]
