"""Reading cases and appending their events: the queries every other case module shares."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec

from crm import timeline
from crm.cases.types import (
    Case,
    CaseClientCandidate,
    CaseContact,
    CaseDetail,
    CaseEvent,
    CaseProposal,
    CaseSummary,
)
from herald.audit import Actor
from herald.errors import NotFound

_CASE = """
SELECT c.id, c.number, c.channel, c.status, c.priority, c.case_type, c.category_id,
       cat.code AS category_code, c.client_id, c.account_id, c.identified_by,
       c.candidate_client_ids, c.contact_name, c.contact_phone, c.contact_email, c.contact_or,
       c.subject, c.body, c.proposed_category_id, c.proposed_type, c.proposed_priority,
       c.proposed_rule_id, c.is_repeat, c.repeat_of_id, c.duplicate_of_id, c.merged_into_id,
       c.group_code, c.assignee_id, c.created_by_login, c.created_at, c.status_changed_at,
       c.last_inbound_at, c.updated_at, c.chat_ref
FROM cases c LEFT JOIN case_categories cat ON cat.id = c.category_id
"""

SUMMARY_COLUMNS = """
id, number, channel, status, priority, case_type, category_id, client_id, subject, is_repeat,
duplicate_of_id, merged_into_id, assignee_id, created_at, status_changed_at
"""

_EVENT_COLUMNS = """
id, case_id, at, kind, actor_id, actor_login, channel, direction, external_id, from_status,
to_status, body, data
"""


def case_from_row(row: asyncpg.Record) -> Case:
    return Case(
        id=row["id"],
        number=row["number"],
        channel=row["channel"],
        status=row["status"],
        priority=row["priority"],
        case_type=row["case_type"],
        category_id=row["category_id"],
        category_code=row["category_code"],
        client_id=row["client_id"],
        account_id=row["account_id"],
        identified_by=row["identified_by"],
        anonymous=row["client_id"] is None,
        candidate_client_ids=list(row["candidate_client_ids"]),
        contact=CaseContact(
            row["contact_name"], row["contact_phone"], row["contact_email"], row["contact_or"]
        ),
        subject=row["subject"],
        text=row["body"],
        proposed=CaseProposal(
            row["proposed_category_id"],
            row["proposed_type"],
            row["proposed_priority"],
            row["proposed_rule_id"],
        ),
        is_repeat=row["is_repeat"],
        repeat_of_id=row["repeat_of_id"],
        duplicate_of_id=row["duplicate_of_id"],
        merged_into_id=row["merged_into_id"],
        group_code=row["group_code"],
        assignee_id=row["assignee_id"],
        created_by_login=row["created_by_login"],
        created_at=row["created_at"],
        status_changed_at=row["status_changed_at"],
        last_inbound_at=row["last_inbound_at"],
        updated_at=row["updated_at"],
    )


async def get_case(conn: asyncpg.Connection, case_id: int, *, lock: bool = False) -> Case:
    sql = _CASE + " WHERE c.id = $1" + (" FOR UPDATE OF c" if lock else "")
    row = await conn.fetchrow(sql, case_id)
    if row is None:
        raise NotFound(f"no case {case_id}")
    return case_from_row(row)


async def _summaries(conn: asyncpg.Connection, where: str, *args: Any) -> list[CaseSummary]:
    rows = await conn.fetch(f"SELECT {SUMMARY_COLUMNS} FROM cases WHERE {where}", *args)
    return [CaseSummary(**dict(r)) for r in rows]


async def detail(conn: asyncpg.Connection, case_id: int, *, previous_limit: int = 20) -> CaseDetail:
    """A case with the client's previous cases, the candidates of an ambiguous contact,
    the cases flagged as its duplicates and those merged into it."""
    case = await get_case(conn, case_id)
    previous: list[CaseSummary] = []
    if case.client_id is not None:
        previous = await _summaries(
            conn,
            "client_id = $1 AND id <> $2 ORDER BY created_at DESC LIMIT $3",
            case.client_id,
            case.id,
            previous_limit,
        )
    candidates: list[CaseClientCandidate] = []
    if case.candidate_client_ids:
        rows = await conn.fetch(
            "SELECT id AS client_id, last_name, first_name, middle_name FROM clients "
            "WHERE id = ANY($1::bigint[]) ORDER BY id",
            case.candidate_client_ids,
        )
        candidates = [CaseClientCandidate(**dict(r)) for r in rows]
    duplicates = await _summaries(conn, "duplicate_of_id = $1 ORDER BY id LIMIT 100", case.id)
    merged = await _summaries(conn, "merged_into_id = $1 ORDER BY id LIMIT 100", case.id)
    return CaseDetail(case, previous, candidates, duplicates, merged)


async def events(
    conn: asyncpg.Connection, case_id: int, *, after_id: int | None, limit: int
) -> list[CaseEvent]:
    rows = await conn.fetch(
        f"SELECT {_EVENT_COLUMNS} FROM case_events WHERE case_id = $1 "
        "AND ($2::bigint IS NULL OR id > $2) ORDER BY id LIMIT $3",
        case_id,
        after_id,
        limit,
    )
    return [CaseEvent(**dict(r)) for r in rows]


class NewEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event to append; the actor and time are added when it is written."""

    kind: str
    channel: str | None = None
    direction: str | None = None
    external_id: str | None = None
    from_status: str | None = None
    to_status: str | None = None
    body: str | None = None
    data: Any = None


async def append_events(
    conn: asyncpg.Connection, actor: Actor, case_id: int, new: Sequence[NewEvent]
) -> None:
    """Append events of one case in one statement, in the order given."""
    await append_many(conn, actor, [(case_id, e) for e in new])


_ENCODE = msgspec.json.Encoder()


async def append_many(
    conn: asyncpg.Connection, actor: Actor, new: Sequence[tuple[int, NewEvent]]
) -> None:
    """Append events of several cases in one statement."""
    if not new:
        return
    await conn.execute(
        """
        INSERT INTO case_events (case_id, kind, actor_id, actor_login, channel, direction,
                                 external_id, from_status, to_status, body, data)
        SELECT e.case_id, e.kind, $1, $2, e.channel, e.direction, e.external_id, e.from_status,
               e.to_status, e.body, e.data::jsonb
        FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                    $9::text[], $10::text[], $11::text[]) WITH ORDINALITY
             AS e(case_id, kind, channel, direction, external_id, from_status, to_status, body,
                  data, n)
        ORDER BY e.n
        """,
        actor.id,
        actor.login,
        [c for c, _ in new],
        [e.kind for _, e in new],
        [e.channel for _, e in new],
        [e.direction for _, e in new],
        [e.external_id for _, e in new],
        [e.from_status for _, e in new],
        [e.to_status for _, e in new],
        [e.body for _, e in new],
        [None if e.data is None else _ENCODE.encode(e.data).decode() for _, e in new],
    )


async def mark_replied(conn: asyncpg.Connection, case_id: int) -> None:
    """Note that the client was just written to (``last_outbound_at``)."""
    await conn.execute(
        "UPDATE cases SET last_outbound_at = herald_now(), updated_at = herald_now() WHERE id = $1",
        case_id,
    )


async def on_timeline(
    conn: asyncpg.Connection, case: Case, *, at: dt.datetime | None = None
) -> None:
    """Put (or update) the case on its client's timeline: kind 'case', ref = case number."""
    if case.client_id is None:
        return
    await timeline.record_event(
        conn,
        client_id=case.client_id,
        kind="case",
        at=at or case.created_at,
        title=case.subject or case.text[:120],
        status=case.status,
        channel=case.channel,
        direction="in",
        ref_type="case",
        ref_id=case.number,
        detail={
            "case_id": case.id,
            "case_type": case.case_type,
            "category_code": case.category_code,
            "priority": case.priority,
        },
    )
