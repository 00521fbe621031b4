"""The status model (SR-07): admin-edited allowed transitions; each change is an event."""

from __future__ import annotations

import asyncpg
import msgspec

from crm.cases import routing, store
from crm.cases.store import NewEvent
from crm.cases.types import Case, CaseStatusInfo, CaseTransition
from herald import audit
from herald.audit import Actor, Change
from herald.errors import Conflict, InvalidInput


class CaseTransitionTable(msgspec.Struct):
    statuses: list[CaseStatusInfo]
    transitions: list[CaseTransition]


async def table(conn: asyncpg.Connection) -> CaseTransitionTable:
    statuses = await conn.fetch(
        "SELECT code, name_uk, name_en, position, is_final FROM case_statuses ORDER BY position"
    )
    pairs = await conn.fetch(
        "SELECT t.from_status, t.to_status FROM case_transitions t "
        "JOIN case_statuses f ON f.code = t.from_status JOIN case_statuses s ON s.code = t.to_status "
        "ORDER BY f.position, s.position"
    )
    return CaseTransitionTable(
        [CaseStatusInfo(**dict(r)) for r in statuses],
        [CaseTransition(r["from_status"], r["to_status"]) for r in pairs],
    )


async def allowed_from(conn: asyncpg.Connection, status: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT t.to_status FROM case_transitions t JOIN case_statuses s ON s.code = t.to_status "
        "WHERE t.from_status = $1 ORDER BY s.position",
        status,
    )
    return [r["to_status"] for r in rows]


async def is_allowed(conn: asyncpg.Connection, from_status: str, to_status: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM case_transitions WHERE from_status = $1 AND to_status = $2)",
            from_status,
            to_status,
        )
    )


async def path_to(
    conn: asyncpg.Connection,
    from_status: str,
    to_status: str,
    *,
    through: tuple[str, ...] = ("in_progress",),
) -> list[str] | None:
    """The statuses to pass to reach ``to_status`` (it included) by allowed transitions,
    stopping on the way only at ``through``; [] when already there, None when there is no
    such way. The default table has no New -> On Hold: a case asked for information goes
    New -> In Progress -> On Hold."""
    if from_status == to_status:
        return []
    rows = await conn.fetch("SELECT from_status, to_status FROM case_transitions")
    moves: dict[str, list[str]] = {}
    for r in rows:
        moves.setdefault(r["from_status"], []).append(r["to_status"])
    paths: dict[str, list[str]] = {from_status: []}
    frontier = [from_status]
    while frontier:
        nxt: list[str] = []
        for status in frontier:
            for to in sorted(moves.get(status, [])):
                if to in paths:
                    continue
                paths[to] = paths[status] + [to]
                if to == to_status:
                    return paths[to]
                if to in through:
                    nxt.append(to)
        frontier = nxt
    return None


async def replace_table(
    conn: asyncpg.Connection, actor: Actor, transitions: list[CaseTransition]
) -> CaseTransitionTable:
    """Make ``transitions`` the whole set of allowed moves (journalled as added/removed)."""
    wanted = {(t.from_status, t.to_status) for t in transitions}
    for i, t in enumerate(transitions):
        if t.from_status == t.to_status:
            raise InvalidInput(f"transitions[{i}].to_status", "a transition must change the status")
        if t.from_status == "closed":
            raise InvalidInput(
                f"transitions[{i}].from_status", "closed is final: no transition leaves it"
            )
    async with conn.transaction():
        rows = await conn.fetch("SELECT from_status, to_status FROM case_transitions FOR UPDATE")
        current = {(r["from_status"], r["to_status"]) for r in rows}
        removed = sorted(current - wanted)
        added = sorted(wanted - current)
        if removed:
            await conn.execute(
                "DELETE FROM case_transitions t USING unnest($1::text[], $2::text[]) AS r(f, s) "
                "WHERE t.from_status = r.f AND t.to_status = r.s",
                [f for f, _ in removed],
                [s for _, s in removed],
            )
        if added:
            await conn.execute(
                "INSERT INTO case_transitions (from_status, to_status, created_by) "
                "SELECT f, s, $3 FROM unnest($1::text[], $2::text[]) AS r(f, s)",
                [f for f, _ in added],
                [s for _, s in added],
                actor.login,
            )
        await audit.record(
            conn,
            actor,
            [
                *(Change("case_transition", f"{f}>{s}", "delete") for f, s in removed),
                *(Change("case_transition", f"{f}>{s}", "create") for f, s in added),
            ],
        )
        return await table(conn)


async def apply(
    conn: asyncpg.Connection,
    actor: Actor,
    case: Case,
    to_status: str,
    *,
    comment: str | None = None,
    data: dict[str, object] | None = None,
) -> Case:
    """Move a locked case to ``to_status``; refused with a Conflict naming both statuses
    (and the allowed ones) when the transition table does not allow it."""
    if case.status == to_status:
        raise Conflict(f"case {case.number} is already {to_status}")
    if not await is_allowed(conn, case.status, to_status):
        allowed = await allowed_from(conn, case.status)
        raise Conflict(
            f"case {case.number}: transition from {case.status!r} to {to_status!r} "
            f"is not allowed; from {case.status!r} allowed: "
            f"{', '.join(allowed) or 'none'}"
        )
    await conn.execute(
        "UPDATE cases SET status = $2, status_changed_at = herald_now(), updated_at = herald_now() "
        "WHERE id = $1",
        case.id,
        to_status,
    )
    await store.append_events(
        conn,
        actor,
        case.id,
        [
            NewEvent(
                kind="status", from_status=case.status, to_status=to_status, body=comment, data=data
            )
        ],
    )
    await audit.record(
        conn, actor, [Change("case", str(case.id), "update", "status", case.status, to_status)]
    )
    if reopens(case.status, to_status) and case.assignee_id is not None:
        await routing.hold_capacity(conn, actor, [case.id], reason="reopened")
    after = await store.get_case(conn, case.id)
    await store.on_timeline(conn, after)
    return after


def reopens(from_status: str, to_status: str) -> bool:
    """Whether a move takes a Resolved case back to work (it counts in its assignee's load
    again, so the assignee's capacity is checked: ``routing.hold_capacity``)."""
    return from_status == "resolved" and to_status in routing.OPEN


async def change_status(
    conn: asyncpg.Connection, actor: Actor, case_id: int, to_status: str, comment: str | None
) -> Case:
    async with conn.transaction():
        case = await store.get_case(conn, case_id, lock=True)
        return await apply(conn, actor, case, to_status, comment=comment)
