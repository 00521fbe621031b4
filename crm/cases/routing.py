"""Case assignment (SR-10): placing a case in its group, the routing pass, "take next",
a supervisor's reassignment, and the agents' loads.

Concurrency: whoever assigns a case to an agent first locks the agent's case_agents row
and only then counts the agent's open cases, so no two claimers can both see a free
slot; cases are claimed with FOR UPDATE SKIP LOCKED, so no case is assigned twice and a
claimer never waits for another's cases. Lock order is agents (by user id), then cases
(skipping locked ones); the one path that waits for a case lock (reassignment) takes at
most one agent lock after it, and the paths holding agent locks never wait for cases,
so there is no deadlock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Annotated

import asyncpg
import msgspec

from crm.cases import agents, groups, store
from crm.cases.groups import GroupCode
from crm.cases.store import NewEvent
from crm.cases.types import Case
from herald import audit, clock
from herald.audit import Actor, Change
from herald.bounds import Id
from herald.errors import Conflict, InvalidInput

ROUTING = Actor(login="routing")
OPEN = ("new", "in_progress", "on_hold")
"""Statuses of a case that counts towards its assignee's load and can be assigned."""
# Literals, not parameters, so that a generic plan still matches the partial indexes
# (cases_unassigned_idx has this predicate and this rank as its second column).
_OPEN_SQL = "('new', 'in_progress', 'on_hold')"
_RANK = "array_position(ARRAY['urgent', 'high', 'normal', 'low']::text[], c.priority)"
_NEVER = float("-inf")


class AgentLoad(msgspec.Struct):
    user_id: int
    login: str
    full_name: str
    presence: str
    presence_changed_at: dt.datetime | None
    capacity: int
    open_cases: int
    groups: list[str]
    last_assigned_at: dt.datetime | None


class Reassignment(msgspec.Struct, forbid_unknown_fields=True):
    """To a user (of the case's group, or of ``group_code``), or to a group's queue."""

    user_id: Id | None = None
    group_code: GroupCode | None = None
    comment: Annotated[str, msgspec.Meta(max_length=4000)] | None = None


async def agent_loads(conn: asyncpg.Connection, group_code: str | None = None) -> list[AgentLoad]:
    """Every agent (or a group's members) with presence, capacity, open assigned cases
    and groups, by login."""
    rows = await conn.fetch(
        """
        SELECT a.user_id, u.login, u.full_name, a.presence, a.presence_changed_at, a.capacity,
               a.last_assigned_at,
               (SELECT count(*) FROM cases c WHERE c.assignee_id = a.user_id
                  AND c.status IN ('new', 'in_progress', 'on_hold')) AS open_cases,
               coalesce((SELECT array_agg(m.group_code ORDER BY m.group_code)
                         FROM case_group_members m WHERE m.user_id = a.user_id), '{}') AS groups
        FROM case_agents a JOIN users u ON u.id = a.user_id
        WHERE $1::text IS NULL OR EXISTS (SELECT 1 FROM case_group_members m
                                          WHERE m.user_id = a.user_id AND m.group_code = $1)
        ORDER BY u.login
        """,
        group_code,
    )
    return [AgentLoad(**{**dict(r), "groups": list(r["groups"])}) for r in rows]


async def _load(conn: asyncpg.Connection, user_ids: Sequence[int]) -> dict[int, int]:
    rows = await conn.fetch(
        "SELECT assignee_id, count(*) AS n FROM cases WHERE assignee_id = ANY($1::bigint[]) "
        f"AND status IN {_OPEN_SQL} GROUP BY assignee_id",
        list(user_ids),
    )
    return {r["assignee_id"]: r["n"] for r in rows}


async def _tree(conn: asyncpg.Connection) -> dict[int, int | None]:
    return {
        r["id"]: r["parent_id"]
        for r in await conn.fetch("SELECT id, parent_id FROM case_categories")
    }


def _chain(tree: dict[int, int | None], category_id: int | None) -> list[int]:
    chain: list[int] = []
    while category_id is not None and category_id not in chain and len(chain) < 100:
        chain.append(category_id)
        category_id = tree.get(category_id)
    return chain


def _below(tree: dict[int, int | None], roots: Sequence[int]) -> list[int]:
    """The categories ``roots`` and every category under them."""
    return [c for c in tree if set(_chain(tree, c)) & set(roots)]


async def _is_member(conn: asyncpg.Connection, user_id: int, group_code: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM case_group_members WHERE group_code = $1 AND user_id = $2)",
            group_code,
            user_id,
        )
    )


async def _write(
    conn: asyncpg.Connection,
    actor: Actor,
    group_code: str | None,
    picks: Sequence[tuple[int, int]],
    by: str,
) -> None:
    """Assign each (case, agent) of ``picks``; the agents' last assignment times keep the
    order of the picks, which round-robin reads next time."""
    await conn.execute(
        "UPDATE cases c SET assignee_id = p.user_id, assigned_at = herald_now(), updated_at = herald_now() "
        "FROM unnest($1::bigint[], $2::bigint[]) AS p(case_id, user_id) "
        "WHERE c.id = p.case_id AND c.assignee_id IS NULL",
        [c for c, _ in picks],
        [u for _, u in picks],
    )
    await conn.execute(
        "UPDATE case_agents a SET last_assigned_at = herald_now() + p.n * interval '1 microsecond' "
        "FROM (SELECT user_id, max(n) AS n FROM unnest($1::bigint[]) WITH ORDINALITY "
        "      AS x(user_id, n) GROUP BY user_id) p WHERE a.user_id = p.user_id",
        [u for _, u in picks],
    )
    await store.append_many(
        conn,
        actor,
        [
            (
                c,
                NewEvent(
                    kind="assignment",
                    data={
                        "by": by,
                        "group_code": group_code,
                        "assignee_id": u,
                        "from_assignee_id": None,
                    },
                ),
            )
            for c, u in picks
        ],
    )
    await audit.record(
        conn, actor, [Change("case", str(c), "update", "assignee_id", None, u) for c, u in picks]
    )


# -- placing a case in its group ---------------------------------------------------------------


async def place(conn: asyncpg.Connection, actor: Actor, case: Case, *, reason: str) -> Case:
    """Put the case in the group its routing rules choose, in the caller's transaction;
    a case a person placed, a finished case, or no group to choose leave it as it is. If
    the group changes and the assignee is not a member of the new one, the case goes back
    to the new group's queue."""
    if case.status not in OPEN or await conn.fetchval(
        "SELECT group_manual FROM cases WHERE id = $1", case.id
    ):
        return case
    group, rule_id = await groups.choose_group(
        conn,
        channel=case.channel,
        category_id=case.category_id,
        case_type=case.case_type,
        priority=case.priority,
    )
    if group is None or group == case.group_code:
        return case
    assignee = case.assignee_id
    if assignee is not None and not await _is_member(conn, assignee, group):
        assignee = None
    await conn.execute(
        "UPDATE cases SET group_code = $2, assignee_id = $3, "
        "assigned_at = CASE WHEN $3::bigint IS NULL THEN NULL ELSE assigned_at END, "
        "updated_at = herald_now() WHERE id = $1",
        case.id,
        group,
        assignee,
    )
    await store.append_events(
        conn,
        actor,
        case.id,
        [
            NewEvent(
                kind="assignment",
                data={
                    "by": "rule",
                    "reason": reason,
                    "rule_id": rule_id,
                    "from_group_code": case.group_code,
                    "group_code": group,
                    "from_assignee_id": case.assignee_id,
                    "assignee_id": assignee,
                },
            )
        ],
    )
    await audit.record(
        conn,
        actor,
        audit.field_changes(
            "case",
            case.id,
            {"group_code": case.group_code, "assignee_id": case.assignee_id},
            {"group_code": group, "assignee_id": assignee},
        ),
    )
    return await store.get_case(conn, case.id)


# -- reopening ---------------------------------------------------------------------------------


async def hold_capacity(
    conn: asyncpg.Connection, actor: Actor, case_ids: Sequence[int], *, reason: str
) -> list[int]:
    """Cases just reopened (open again, locked by the caller) whose assignee is now over
    capacity go back to their group's queue, as many as the agent is over; the routing
    pass gives them to whoever has room. Returns the cases released.

    Called after the status change, so the reopened cases count in the load. Lock order as
    ``reassign``: the cases first, then the agents (by user id)."""
    rows = await conn.fetch(
        f"SELECT id, assignee_id, group_code FROM cases WHERE id = ANY($1::bigint[]) "
        f"AND assignee_id IS NOT NULL AND status IN {_OPEN_SQL} ORDER BY id DESC",
        list(case_ids),
    )
    if not rows:
        return []
    users = sorted({r["assignee_id"] for r in rows})
    capacity = {
        r["user_id"]: r["capacity"]
        for r in await conn.fetch(
            "SELECT user_id, capacity FROM case_agents WHERE user_id = ANY($1::bigint[]) "
            "ORDER BY user_id FOR UPDATE",
            users,
        )
    }
    loads = await _load(conn, users)
    over = {u: loads.get(u, 0) - capacity[u] for u in users if u in capacity}
    released: list[asyncpg.Record] = []
    for r in rows:  # the latest reopened first
        if over.get(r["assignee_id"], 0) > 0:
            over[r["assignee_id"]] -= 1
            released.append(r)
    if not released:
        return []
    ids = [r["id"] for r in released]
    await conn.execute(
        "UPDATE cases SET assignee_id = NULL, assigned_at = NULL, "
        "updated_at = herald_now() WHERE id = ANY($1::bigint[])",
        ids,
    )
    await store.append_many(
        conn,
        actor,
        [
            (
                r["id"],
                NewEvent(
                    kind="assignment",
                    data={
                        "by": "capacity",
                        "reason": reason,
                        "group_code": r["group_code"],
                        "from_assignee_id": r["assignee_id"],
                        "assignee_id": None,
                        "capacity": capacity[r["assignee_id"]],
                    },
                ),
            )
            for r in released
        ],
    )
    await audit.record(
        conn,
        actor,
        [
            Change("case", str(r["id"]), "update", "assignee_id", r["assignee_id"], None)
            for r in released
        ],
    )
    return ids


# -- the routing pass ------------------------------------------------------------------------


class _Slot:
    __slots__ = ("user_id", "load", "capacity", "last", "languages", "channels", "categories")

    def __init__(self, row: asyncpg.Record, load: int) -> None:
        self.user_id: int = row["user_id"]
        self.load = load
        self.capacity: int = row["capacity"]
        last = row["last_assigned_at"]
        self.last = last.timestamp() if last is not None else _NEVER
        self.languages = set(row["languages"])
        self.channels = set(row["channels"])
        self.categories = set(row["category_ids"])

    def skilled(self, channel: str, language: str, chain: list[int]) -> bool:
        return (
            (not self.channels or channel in self.channels)
            and (not self.languages or language in self.languages)
            and (not self.categories or bool(self.categories.intersection(chain)))
        )


async def route_group(
    conn: asyncpg.Connection, group_code: str, mode: str, *, batch: int = 500
) -> int:
    """Assign up to ``batch`` of the group's unassigned open cases (most urgent, then
    oldest, first) to its online members with free capacity; returns how many."""
    async with conn.transaction():
        rows = await conn.fetch(
            """
            SELECT a.user_id, a.capacity, a.last_assigned_at, a.languages, a.channels,
                   a.category_ids
            FROM case_agents a JOIN users u ON u.id = a.user_id AND u.is_active
            WHERE a.presence = 'online' AND a.user_id IN (
                SELECT user_id FROM case_group_members WHERE group_code = $1)
            ORDER BY a.user_id FOR UPDATE OF a
            """,
            group_code,
        )
        loads = await _load(conn, [r["user_id"] for r in rows])
        slots = [
            s for s in (_Slot(r, loads.get(r["user_id"], 0)) for r in rows) if s.load < s.capacity
        ]
        if not slots:
            return 0
        if mode == "round_robin":  # every case fits every agent: claim no more than fit
            batch = min(batch, sum(s.capacity - s.load for s in slots))
        cases = await conn.fetch(
            f"""
            SELECT c.id, c.channel, c.category_id, coalesce(cl.language, 'uk') AS language
            FROM cases c LEFT JOIN clients cl ON cl.id = c.client_id
            WHERE c.group_code = $1 AND c.assignee_id IS NULL AND c.status IN {_OPEN_SQL}
            ORDER BY {_RANK}, c.created_at, c.id
            LIMIT $2 FOR UPDATE OF c SKIP LOCKED
            """,
            group_code,
            batch,
        )
        tree = await _tree(conn) if mode == "skills" else {}
        picks: list[tuple[int, int]] = []
        tick = clock.now().timestamp()
        for case in cases:
            free = [s for s in slots if s.load < s.capacity]
            if not free:
                break
            if mode == "skills":
                chain = _chain(tree, case["category_id"])
                free = [s for s in free if s.skilled(case["channel"], case["language"], chain)]
                best = min(free, key=lambda s: (s.load, s.last, s.user_id), default=None)
            else:
                best = min(free, key=lambda s: (s.last, s.user_id))
            if best is None:
                continue
            best.load += 1
            tick += 1e-6
            best.last = tick
            picks.append((case["id"], best.user_id))
        if picks:
            await _write(conn, ROUTING, group_code, picks, mode)
        return len(picks)


async def run_pass(pool: asyncpg.Pool, *, batch: int = 500) -> int:
    """One routing pass over every active group with unassigned open cases (the
    scheduler's duty); returns how many cases were assigned."""
    async with pool.acquire() as conn:
        pending = await conn.fetch(
            "SELECT g.code, g.mode FROM case_groups g WHERE g.is_active AND EXISTS ("
            "SELECT 1 FROM cases c WHERE c.group_code = g.code AND c.assignee_id IS NULL "
            f"AND c.status IN {_OPEN_SQL}) ORDER BY g.code"
        )
        total = 0
        for group in pending:
            total += await route_group(conn, group["code"], group["mode"], batch=batch)
        return total


# -- take next and reassignment --------------------------------------------------------------


def _order(row: asyncpg.Record) -> tuple[int, dt.datetime, int]:
    return row["rank"], row["created_at"], row["id"]


async def take_next(conn: asyncpg.Connection, actor: Actor) -> Case | None:
    """Claim the best unassigned open case of my groups for me (most urgent, then oldest;
    in a skills group only cases my skills match); None when there is none."""
    if actor.id is None:
        raise Conflict("only a user can take cases")
    async with conn.transaction():
        await agents.ensure_agent(conn, actor.id)
        agent = await agents.get_agent(conn, actor.id, lock=True)
        if agent.presence not in ("online", "busy"):
            raise Conflict(f"your presence is {agent.presence}: set it to online to take cases")
        load = (await _load(conn, [actor.id])).get(actor.id, 0)
        if load >= agent.capacity:
            raise Conflict(f"you have {load} open cases, your capacity is {agent.capacity}")
        categories = _below(await _tree(conn), agent.category_ids) if agent.category_ids else []
        mine = await conn.fetch(
            "SELECT g.code, g.mode FROM case_groups g JOIN case_group_members m "
            "ON m.group_code = g.code AND m.user_id = $1 WHERE g.is_active ORDER BY g.code",
            actor.id,
        )
        # One ordered index scan per group (an agent is in a few), the best of them claimed;
        # the others stay locked only until this transaction ends.
        row: asyncpg.Record | None = None
        for group in mine:
            found = await conn.fetchrow(
                f"""
                SELECT c.id, c.group_code, {_RANK} AS rank, c.created_at FROM cases c
                LEFT JOIN clients cl ON cl.id = c.client_id
                WHERE c.group_code = $1 AND c.assignee_id IS NULL AND c.status IN {_OPEN_SQL}
                  AND (NOT $2 OR (
                       (cardinality($3::text[]) = 0 OR c.channel = ANY($3::text[]))
                   AND (cardinality($4::text[]) = 0
                        OR coalesce(cl.language, 'uk') = ANY($4::text[]))
                   AND (cardinality($5::bigint[]) = 0 OR c.category_id = ANY($6::bigint[]))))
                ORDER BY {_RANK}, c.created_at, c.id
                LIMIT 1 FOR UPDATE OF c SKIP LOCKED
                """,
                group["code"],
                group["mode"] == "skills",
                agent.channels,
                agent.languages,
                agent.category_ids,
                categories,
            )
            if found is not None and (row is None or _order(found) < _order(row)):
                row = found
        if row is None:
            return None
        await _write(conn, actor, row["group_code"], [(row["id"], actor.id)], "take_next")
        return await store.get_case(conn, row["id"])


async def reassign(conn: asyncpg.Connection, actor: Actor, case_id: int, to: Reassignment) -> Case:
    """A supervisor moves a case to a user and/or a group; the rules no longer move it.
    To a group alone: the case waits in that group's queue. The user's capacity holds."""
    if to.user_id is None and to.group_code is None:
        raise InvalidInput("user_id", "give user_id, group_code or both")
    async with conn.transaction():
        case = await store.get_case(conn, case_id, lock=True)
        if case.status not in OPEN:
            raise Conflict(f"case {case.number} is {case.status}; only open cases are reassigned")
        if to.group_code is not None:
            await groups.check_group(conn, to.group_code, "group_code")
        group = to.group_code or case.group_code
        assignee = to.user_id
        if assignee is not None:
            await agents.ensure_agent(conn, assignee)
            if group is not None and not await _is_member(conn, assignee, group):
                raise InvalidInput("user_id", f"user {assignee} is not a member of group {group!r}")
            agent = await agents.get_agent(conn, assignee, lock=True)
            load = (await _load(conn, [assignee])).get(assignee, 0)
            if assignee != case.assignee_id and load >= agent.capacity:
                raise Conflict(
                    f"user {assignee} has {load} open cases, at capacity {agent.capacity}"
                )
        if (group, assignee) == (case.group_code, case.assignee_id):
            return case
        await conn.execute(
            "UPDATE cases SET group_code = $2, assignee_id = $3, group_manual = true, "
            "assigned_at = CASE WHEN $3::bigint IS NULL THEN NULL ELSE herald_now() END, "
            "updated_at = herald_now() WHERE id = $1",
            case.id,
            group,
            assignee,
        )
        if assignee is not None:
            await conn.execute(
                "UPDATE case_agents SET last_assigned_at = herald_now() WHERE user_id = $1",
                assignee,
            )
        await store.append_events(
            conn,
            actor,
            case.id,
            [
                NewEvent(
                    kind="assignment",
                    body=to.comment,
                    data={
                        "by": "manual",
                        "from_group_code": case.group_code,
                        "group_code": group,
                        "from_assignee_id": case.assignee_id,
                        "assignee_id": assignee,
                    },
                )
            ],
        )
        await audit.record(
            conn,
            actor,
            audit.field_changes(
                "case",
                case.id,
                {"group_code": case.group_code, "assignee_id": case.assignee_id},
                {"group_code": group, "assignee_id": assignee},
            ),
        )
        return await store.get_case(conn, case.id)
