"""Hand-off of work on a case to another department as a task with its own deadline
(SR-10). Every change is a case event of kind ``task`` and an audit entry."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import asyncpg
import msgspec

from crm.cases import agents, groups, store
from crm.cases.groups import GroupCode
from crm.cases.store import NewEvent
from herald import audit
from herald.audit import Actor, Change
from herald.bounds import Id
from herald.errors import Conflict, InvalidInput, NotFound

TaskStatus = Literal["open", "done", "cancelled"]
Text = Annotated[str, msgspec.Meta(max_length=4000)]


class CaseTaskSpec(msgspec.Struct, forbid_unknown_fields=True):
    group_code: GroupCode
    title: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    due_at: dt.datetime
    assignee_id: Id | None = None
    body: Text | None = None


class CaseTaskClose(msgspec.Struct, forbid_unknown_fields=True):
    result: Text | None = None


class CaseTask(msgspec.Struct):
    id: int
    case_id: int
    case_number: str
    group_code: str
    assignee_id: int | None
    title: str
    body: str | None
    due_at: dt.datetime
    status: str
    overdue: bool
    result: str | None
    created_by_login: str
    created_at: dt.datetime
    closed_by_login: str | None
    closed_at: dt.datetime | None


class CaseTaskQuery(msgspec.Struct, forbid_unknown_fields=True):
    """``mine``: tasks assigned to me or to my groups with no assignee."""

    mine: bool = False
    group_code: GroupCode | None = None
    assignee_id: Id | None = None
    status: TaskStatus | None = None
    overdue: bool | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100


_TASK = """
SELECT t.id, t.case_id, c.number AS case_number, t.group_code, t.assignee_id, t.title, t.body,
       t.due_at, t.status, (t.status = 'open' AND t.due_at < herald_now()) AS overdue, t.result,
       t.created_by_login, t.created_at, t.closed_by_login, t.closed_at
FROM case_tasks t JOIN cases c ON c.id = t.case_id
"""


def _aware(value: dt.datetime, field: str) -> dt.datetime:
    if value.tzinfo is None:
        raise InvalidInput(field, "give a time zone (e.g. 2026-12-04T12:00:00+02:00)")
    return value


async def get_task(conn: asyncpg.Connection, task_id: int, *, lock: bool = False) -> CaseTask:
    row = await conn.fetchrow(
        _TASK + " WHERE t.id = $1" + (" FOR UPDATE OF t" if lock else ""), task_id
    )
    if row is None:
        raise NotFound(f"no case task {task_id}")
    return CaseTask(**dict(row))


async def create_task(
    conn: asyncpg.Connection, actor: Actor, case_id: int, spec: CaseTaskSpec
) -> CaseTask:
    due_at = _aware(spec.due_at, "due_at")
    async with conn.transaction():
        case = await store.get_case(conn, case_id, lock=True)
        if case.status == "closed":
            raise Conflict(f"case {case.number} is closed")
        await groups.check_group(conn, spec.group_code, "group_code")
        if spec.assignee_id is not None:
            await agents.ensure_agent(conn, spec.assignee_id, field="assignee_id")
            if not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM case_group_members WHERE group_code = $1 "
                "AND user_id = $2)",
                spec.group_code,
                spec.assignee_id,
            ):
                raise InvalidInput(
                    "assignee_id",
                    f"user {spec.assignee_id} is not a member of group {spec.group_code!r}",
                )
        task_id = await conn.fetchval(
            "INSERT INTO case_tasks (case_id, group_code, assignee_id, title, body, due_at, "
            "created_by, created_by_login) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            case.id,
            spec.group_code,
            spec.assignee_id,
            spec.title,
            spec.body,
            due_at,
            actor.id,
            actor.login,
        )
        data = {
            "action": "create",
            "task_id": task_id,
            "group_code": spec.group_code,
            "assignee_id": spec.assignee_id,
            "due_at": due_at.isoformat(),
        }
        await store.append_events(
            conn, actor, case.id, [NewEvent(kind="task", body=spec.title, data=data)]
        )
        await audit.record(
            conn,
            actor,
            [
                Change(
                    "case_task",
                    str(task_id),
                    "create",
                    None,
                    None,
                    {**data, "case_id": case.id, "title": spec.title},
                )
            ],
        )
        return await get_task(conn, task_id)


async def close_task(
    conn: asyncpg.Connection,
    actor: Actor,
    task_id: int,
    status: str,
    result: str | None,
    *,
    supervisor: bool,
) -> CaseTask:
    """Mark an open task done or cancelled: by its assignee, a member of its group, its
    author, or a supervisor (``supervisor``)."""
    async with conn.transaction():
        task = await get_task(conn, task_id, lock=True)
        if task.status != "open":
            raise Conflict(f"task {task_id} is already {task.status}")
        allowed = (
            supervisor
            or actor.login == task.created_by_login
            or (
                actor.id is not None
                and (
                    task.assignee_id == actor.id
                    or await conn.fetchval(
                        "SELECT EXISTS (SELECT 1 FROM case_group_members WHERE group_code = $1 "
                        "AND user_id = $2)",
                        task.group_code,
                        actor.id,
                    )
                )
            )
        )
        if not allowed:
            raise Conflict(
                f"task {task_id} belongs to group {task.group_code!r}: only its "
                "members, its author or a supervisor can close it"
            )
        await conn.execute(
            "UPDATE case_tasks SET status = $2, result = $3, closed_by = $4, closed_by_login = $5, "
            "closed_at = herald_now() WHERE id = $1",
            task_id,
            status,
            result,
            actor.id,
            actor.login,
        )
        await store.append_events(
            conn,
            actor,
            task.case_id,
            [
                NewEvent(
                    kind="task",
                    body=result,
                    data={"action": status, "task_id": task_id, "group_code": task.group_code},
                )
            ],
        )
        await audit.record(
            conn, actor, [Change("case_task", str(task_id), "update", "status", "open", status)]
        )
        return await get_task(conn, task_id)


async def case_tasks(conn: asyncpg.Connection, case_id: int) -> list[CaseTask]:
    await store.get_case(conn, case_id)
    rows = await conn.fetch(_TASK + " WHERE t.case_id = $1 ORDER BY t.id", case_id)
    return [CaseTask(**dict(r)) for r in rows]


async def list_tasks(
    conn: asyncpg.Connection, actor: Actor, query: CaseTaskQuery
) -> list[CaseTask]:
    """Tasks by the filters given, soonest deadline first; ``overdue`` = open and past due."""
    rows = await conn.fetch(
        _TASK
        + """
        WHERE ($1::text IS NULL OR t.group_code = $1)
          AND ($2::bigint IS NULL OR t.assignee_id = $2)
          AND ($3::text IS NULL OR t.status = $3)
          AND ($4::boolean IS NULL OR (t.status = 'open' AND t.due_at < herald_now()) = $4)
          AND (NOT $5 OR t.assignee_id = $6 OR (t.assignee_id IS NULL AND t.group_code IN (
                 SELECT group_code FROM case_group_members WHERE user_id = $6)))
        ORDER BY t.due_at, t.id LIMIT $7
        """,
        query.group_code,
        query.assignee_id,
        query.status,
        query.overdue,
        query.mine,
        actor.id,
        query.limit,
    )
    return [CaseTask(**dict(r)) for r in rows]
