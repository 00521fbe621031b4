"""Repeat contacts, duplicates and merging (SR-05, SR-06), and the windows that define them."""

from __future__ import annotations

from typing import Annotated

import asyncpg
import msgspec

from crm.cases import store
from crm.cases.identify import Identification
from crm.cases.store import NewEvent
from crm.cases.text import similarity
from crm.cases.types import Case, CaseSettings
from herald import audit
from herald.audit import Actor, Change
from herald.errors import Conflict, InvalidInput, NotFound


class CaseSettingsSpec(msgspec.Struct, forbid_unknown_fields=True):
    """``duplicate_similarity_percent`` left out keeps the current threshold."""

    repeat_window_days: Annotated[int, msgspec.Meta(ge=1, le=365)]
    duplicate_window_minutes: Annotated[int, msgspec.Meta(ge=1, le=1440)]
    duplicate_similarity_percent: Annotated[int, msgspec.Meta(ge=30, le=100)] | None = None


async def get_settings(conn: asyncpg.Connection) -> CaseSettings:
    row = await conn.fetchrow(
        "SELECT repeat_window_days, duplicate_window_minutes, "
        "duplicate_similarity_percent, updated_at, updated_by "
        "FROM case_settings"
    )
    return CaseSettings(**dict(row))


async def put_settings(
    conn: asyncpg.Connection, actor: Actor, spec: CaseSettingsSpec
) -> CaseSettings:
    async with conn.transaction():
        before = await get_settings(conn)
        if spec.duplicate_similarity_percent is None:
            spec = msgspec.structs.replace(
                spec, duplicate_similarity_percent=before.duplicate_similarity_percent
            )
        await conn.execute(
            "UPDATE case_settings SET repeat_window_days = $1, "
            "duplicate_window_minutes = $2, duplicate_similarity_percent = $3, "
            "updated_at = herald_now(), updated_by = $4",
            spec.repeat_window_days,
            spec.duplicate_window_minutes,
            spec.duplicate_similarity_percent,
            actor.login,
        )
        await audit.record(
            conn,
            actor,
            audit.field_changes(
                "case_settings", "cases", msgspec.to_builtins(before), msgspec.to_builtins(spec)
            ),
        )
        return await get_settings(conn)


async def find_repeat(
    conn: asyncpg.Connection,
    *,
    client_id: int | None,
    category_id: int | None,
    window_days: int,
    exclude_id: int | None = None,
) -> int | None:
    """The client's latest case of the same category within the window (merged ones aside)."""
    if client_id is None or category_id is None:
        return None
    return await conn.fetchval(
        """
        SELECT id FROM cases
        WHERE client_id = $1 AND category_id = $2 AND merged_into_id IS NULL
          AND created_at > herald_now() - make_interval(days => $3)
          AND ($4::bigint IS NULL OR id <> $4)
        ORDER BY created_at DESC LIMIT 1
        """,
        client_id,
        category_id,
        window_days,
        exclude_id,
    )


class DuplicateMatch(msgspec.Struct):
    """How a new case matched an earlier one of the same client (the ``flag`` event says it).

    ``how``: ``same_text`` (the same normalised text) or ``similar_text`` (``similarity``
    of at least the admin's threshold, and the topic agrees: ``topic`` is
    ``same_category``, ``related_category`` (one under the other) or ``unknown`` (not
    classified on either side)). ``matched_case_id`` is the case it matched, whose
    original (``original_id``) the new case is flagged a duplicate of."""

    original_id: int
    matched_case_id: int
    how: str
    channel: str
    cross_channel: bool
    similarity: float
    topic: str
    minutes_apart: float


# A client's cases in the window, newest first; a client writes a handful a day at most.
_CANDIDATES = 50


def _topic(tree: dict[int, int | None], a: int | None, b: int | None) -> str | None:
    """How two categories agree: None when they are different topics."""
    if a is None or b is None:
        return "unknown"
    if a == b:
        return "same_category"

    def chain(c: int | None) -> list[int]:
        out: list[int] = []
        while c is not None and c not in out and len(out) < 100:
            out.append(c)
            c = tree.get(c)
        return out

    return "related_category" if a in chain(b) or b in chain(a) else None


async def find_duplicate(
    conn: asyncpg.Connection,
    *,
    client_id: int | None,
    channel: str,
    subject: str | None,
    text: str,
    text_hash: bytes,
    category_id: int | None,
    settings: CaseSettings,
) -> DuplicateMatch | None:
    """The earlier case of the same client, on any channel and within the admin's window,
    that a new case duplicates: the same normalised text first (the earliest), else the
    most similar text on an agreeing topic."""
    if client_id is None:
        return None
    rows = await conn.fetch(
        """
        SELECT id, coalesce(duplicate_of_id, id) AS original_id, channel, subject, body,
               text_hash, category_id,
               extract(epoch FROM herald_now() - created_at) / 60 AS minutes_apart
        FROM cases
        WHERE client_id = $1 AND merged_into_id IS NULL
          AND created_at > herald_now() - make_interval(mins => $2)
        ORDER BY created_at DESC LIMIT $3
        """,
        client_id,
        settings.duplicate_window_minutes,
        _CANDIDATES,
    )
    if not rows:
        return None

    def match(r: asyncpg.Record, how: str, score: float, topic: str) -> DuplicateMatch:
        return DuplicateMatch(
            r["original_id"],
            r["id"],
            how,
            r["channel"],
            r["channel"] != channel,
            round(score, 3),
            topic,
            round(float(r["minutes_apart"]), 1),
        )

    same = [r for r in rows if r["text_hash"] == text_hash]
    if same:
        earliest = same[-1]
        tree = await _category_tree(conn)
        return match(
            earliest,
            "same_text",
            1.0,
            _topic(tree, category_id, earliest["category_id"]) or "different_category",
        )
    tree = await _category_tree(conn)
    threshold = settings.duplicate_similarity_percent / 100
    best: tuple[float, DuplicateMatch] | None = None
    new_text = f"{subject or ''} {text}"
    for r in reversed(rows):  # oldest first: a tie keeps the earliest
        topic = _topic(tree, category_id, r["category_id"])
        if topic is None:
            continue
        score = similarity(new_text, f"{r['subject'] or ''} {r['body']}")
        if score >= threshold and (best is None or score > best[0]):
            best = (score, match(r, "similar_text", score, topic))
    return best[1] if best else None


async def _category_tree(conn: asyncpg.Connection) -> dict[int, int | None]:
    return {
        r["id"]: r["parent_id"]
        for r in await conn.fetch("SELECT id, parent_id FROM case_categories")
    }


async def refresh_repeat(conn: asyncpg.Connection, actor: Actor, case: Case) -> None:
    """Re-evaluate the repeat flag of a (locked) case after its category changed."""
    window = (await get_settings(conn)).repeat_window_days
    repeat_of = (
        await conn.fetchval(
            """
        SELECT id FROM cases
        WHERE client_id = $1 AND category_id = $2 AND merged_into_id IS NULL AND id <> $3
          AND created_at < $4 AND created_at > $4 - make_interval(days => $5)
        ORDER BY created_at DESC LIMIT 1
        """,
            case.client_id,
            case.category_id,
            case.id,
            case.created_at,
            window,
        )
        if case.client_id is not None and case.category_id is not None
        else None
    )
    if (repeat_of is not None) == case.is_repeat and repeat_of == case.repeat_of_id:
        return
    await conn.execute(
        "UPDATE cases SET is_repeat = $2, repeat_of_id = $3, updated_at = herald_now() "
        "WHERE id = $1",
        case.id,
        repeat_of is not None,
        repeat_of,
    )
    await store.append_events(
        conn,
        actor,
        case.id,
        [
            NewEvent(
                kind="flag", data={"is_repeat": repeat_of is not None, "repeat_of_id": repeat_of}
            )
        ],
    )
    await audit.record(
        conn,
        actor,
        audit.field_changes(
            "case",
            case.id,
            {"is_repeat": case.is_repeat, "repeat_of_id": case.repeat_of_id},
            {"is_repeat": repeat_of is not None, "repeat_of_id": repeat_of},
        ),
    )


async def merge(conn: asyncpg.Connection, actor: Actor, case_id: int, into_id: int) -> Case:
    """Merge a case into another (its duplicate's original, say): the source is closed with
    ``merged_into_id`` set; both journals record it. Returns the target."""
    if case_id == into_id:
        raise InvalidInput("into", "a case cannot be merged into itself")
    async with conn.transaction():
        # Lock both in id order so two opposite merges cannot deadlock.
        locked = {}
        for cid in sorted((case_id, into_id)):
            try:
                locked[cid] = await store.get_case(conn, cid, lock=True)
            except NotFound:
                if cid == into_id:
                    raise InvalidInput("into", f"no case {into_id}") from None
                raise
        source, target = locked[case_id], locked[into_id]
        if source.merged_into_id is not None or source.status == "closed":
            raise Conflict(
                f"case {source.number} is {source.status}; only an open case can be merged"
            )
        if target.merged_into_id is not None or target.status == "closed":
            raise Conflict(f"case {target.number} is {target.status}; merge into an open case")
        if (
            source.client_id is not None
            and target.client_id is not None
            and source.client_id != target.client_id
        ):
            raise Conflict(f"cases {source.number} and {target.number} belong to different clients")
        await conn.execute(
            "UPDATE cases SET merged_into_id = $2, status = 'closed', status_changed_at = herald_now(), "
            "updated_at = herald_now() WHERE id = $1",
            source.id,
            target.id,
        )
        await store.append_many(
            conn,
            actor,
            [
                (
                    source.id,
                    NewEvent(kind="merge", data={"into": target.id, "into_number": target.number}),
                ),
                (
                    source.id,
                    NewEvent(
                        kind="status",
                        from_status=source.status,
                        to_status="closed",
                        data={"reason": "merged", "into": target.id},
                    ),
                ),
                (
                    target.id,
                    NewEvent(
                        kind="merge", data={"merged": source.id, "merged_number": source.number}
                    ),
                ),
            ],
        )
        await audit.record(
            conn,
            actor,
            [
                Change("case", str(source.id), "update", "merged_into_id", None, target.id),
                Change("case", str(source.id), "update", "status", source.status, "closed"),
                Change("case", str(target.id), "merge", None, None, {"merged": source.id}),
            ],
        )
        await store.on_timeline(conn, await store.get_case(conn, source.id))
        return await store.get_case(conn, target.id)


async def link(conn: asyncpg.Connection, actor: Actor, case: Case, found: Identification) -> Case:
    """Link a locked anonymous case to a client, once (the database refuses any later change)."""
    if case.client_id is not None:
        raise Conflict(
            f"case {case.number} is already linked to client {case.client_id}; "
            "a case's client never changes"
        )
    await conn.execute(
        "UPDATE cases SET client_id = $2, account_id = $3, identified_by = $4, "
        "candidate_client_ids = '{}', updated_at = herald_now() WHERE id = $1",
        case.id,
        found.client_id,
        found.account_id,
        found.identified_by,
    )
    await store.append_events(
        conn,
        actor,
        case.id,
        [
            NewEvent(
                kind="client_link",
                data={
                    "client_id": found.client_id,
                    "account_id": found.account_id,
                    "identified_by": found.identified_by,
                },
            )
        ],
    )
    await audit.record(
        conn,
        actor,
        [
            Change("case", str(case.id), "update", "client_id", None, found.client_id),
            Change("case", str(case.id), "update", "identified_by", None, found.identified_by),
        ],
    )
    after = await store.get_case(conn, case.id)
    await store.on_timeline(conn, after)
    return after


async def link_client(
    conn: asyncpg.Connection, actor: Actor, case_id: int, client_id: int, account_id: int | None
) -> Case:
    """An operator links an anonymous case to the client they identified."""
    async with conn.transaction():
        case = await store.get_case(conn, case_id, lock=True)
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM clients WHERE id = $1)", client_id
        ):
            raise InvalidInput("client_id", f"no client {client_id}")
        if account_id is not None and not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM accounts WHERE id = $1 AND client_id = $2)",
            account_id,
            client_id,
        ):
            raise InvalidInput(
                "account_id", f"account {account_id} is not one of client {client_id}'s"
            )
        return await link(conn, actor, case, Identification(client_id, account_id, "operator"))
