"""Stop lists: entries for clients or segments, their store and the batch check."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import asyncpg
import pytest

from crm import audit as audit_journal
from herald import audit, clock
from herald.errors import InvalidInput, NotFound
from rules import stop_lists
from rules.decision import STOP_LIST
from rules.stop_lists import (
    MembershipUnavailable,
    add_entry,
    blocked_clients,
    list_entries,
    remove_entry,
)

ADMIN = audit.Actor(login="admin1", id=None)
NOW = clock.now()
DAY = dt.timedelta(days=1)


async def _clients(conn: asyncpg.Connection, n: int) -> list[int]:
    rows = await conn.fetch(
        "INSERT INTO clients (last_name, first_name) SELECT 'Тест', 'Клієнт' || g "
        "FROM generate_series(1, $1) g RETURNING id",
        n,
    )
    return [r["id"] for r in rows]


class Segments:
    """Segment membership as the segments module will answer it (test double)."""

    def __init__(self, members: dict[int, set[int]]) -> None:
        self.members = members
        self.calls = 0

    async def members_among(
        self, segment_ids: Sequence[int], client_ids: Sequence[int]
    ) -> set[int]:
        self.calls += 1
        inside = set().union(*(self.members.get(s, set()) for s in segment_ids))
        return inside & set(client_ids)


async def test_client_entry_blocks_given_topics_only(app_conn: asyncpg.Connection) -> None:
    # Given one client blocked from marketing and another blocked from every topic
    a, b, c = await _clients(app_conn, 3)
    await add_entry(app_conn, ADMIN, client_id=a, topics=["marketing"], reason="asked by phone")
    await add_entry(app_conn, ADMIN, client_id=b, reason="court order")
    # When a marketing batch and a debt batch are checked
    marketing = await stop_lists.check(app_conn, [a, b, c], "marketing")
    debt = await stop_lists.check(app_conn, [a, b, c], "debt")
    # Then marketing skips both, debt only the one blocked from everything
    assert marketing == {a: STOP_LIST, b: STOP_LIST}
    assert debt == {b: STOP_LIST}


async def test_validity_period_is_respected(app_conn: asyncpg.Connection) -> None:
    # Given an entry starting tomorrow and one that ended an hour ago
    a, b = await _clients(app_conn, 2)
    await add_entry(app_conn, ADMIN, client_id=a, reason="from tomorrow", valid_from=NOW + DAY)
    await add_entry(
        app_conn,
        ADMIN,
        client_id=b,
        reason="old",
        valid_from=NOW - 2 * DAY,
        valid_until=NOW + dt.timedelta(hours=1),
    )
    # When checked now, Then only the running entry blocks
    assert await blocked_clients(app_conn, [a, b], "debt", now=NOW) == {b}
    # When checked in two days, Then the roles are swapped
    assert await blocked_clients(app_conn, [a, b], "debt", now=NOW + 2 * DAY) == {a}


async def test_segment_entries_use_the_callers_membership(app_conn: asyncpg.Connection) -> None:
    # Given segment 7 (clients a and b) blocked from marketing
    a, b, c = await _clients(app_conn, 3)
    await add_entry(app_conn, ADMIN, segment_id=7, topics=["marketing"], reason="destroyed housing")
    segments = Segments({7: {a, b, 999}})
    # When a marketing batch is checked with the membership
    blocked = await blocked_clients(app_conn, [a, c], "marketing", membership=segments)
    # Then the member in the batch is blocked, with one membership call for the batch
    assert blocked == {a}
    assert segments.calls == 1
    # And a batch for another topic never asks for membership
    assert await blocked_clients(app_conn, [a, c], "debt") == set()


async def test_segment_entry_without_membership_refuses_to_guess(
    app_conn: asyncpg.Connection,
) -> None:
    # Given a segment entry for every topic
    (a,) = await _clients(app_conn, 1)
    await add_entry(app_conn, ADMIN, segment_id=3, reason="pilot")
    # When a batch is checked without a way to resolve segments
    # Then the check fails rather than send to possibly blocked clients
    with pytest.raises(MembershipUnavailable):
        await blocked_clients(app_conn, [a], "debt")


async def test_add_list_remove_are_journalled(app_conn: asyncpg.Connection) -> None:
    # Given an entry added by an admin
    (a,) = await _clients(app_conn, 1)
    entry = await add_entry(
        app_conn, ADMIN, client_id=a, topics=["marketing", "billing"], reason="  complaint  "
    )
    assert (entry.topics, entry.reason, entry.created_by) == (
        ["billing", "marketing"],
        "complaint",
        "admin1",
    )
    # When listed, Then it is there; When removed, Then it is gone and cannot be removed twice
    assert [e.id for e in await list_entries(app_conn, client_id=a)] == [entry.id]
    assert [e.id for e in await list_entries(app_conn, active_at=NOW + DAY)] == [entry.id]
    await remove_entry(app_conn, ADMIN, entry.id)
    assert await list_entries(app_conn) == []
    with pytest.raises(NotFound):
        await remove_entry(app_conn, ADMIN, entry.id)
    # And the journal has the creation and the removal with the whole entry
    history = await audit_journal.history(
        app_conn, "stop_list_entry", str(entry.id), limit=10, pii_visible=True
    )
    assert [h.action for h in history] == ["delete", "create"]
    assert history[0].old_value["topics"] == ["billing", "marketing"]
    assert history[1].new_value["client_id"] == a


@pytest.mark.parametrize(
    "values, field",
    [
        ({"reason": "x"}, "client_id"),
        ({"reason": "x", "client_id": 1, "segment_id": 2}, "client_id"),
        ({"reason": "x", "client_id": 999_999_999}, "client_id"),
        ({"reason": "x", "segment_id": -1}, "segment_id"),
        ({"reason": " ", "segment_id": 1}, "reason"),
        ({"reason": "x", "segment_id": 1, "topics": ["lottery"]}, "topics"),
        ({"reason": "x", "segment_id": 1, "topics": []}, "topics"),
        ({"reason": "x", "segment_id": 1, "valid_until": NOW - DAY}, "valid_until"),
        ({"reason": "x", "segment_id": 1, "valid_from": dt.datetime(2030, 1, 1)}, "valid_from"),
    ],
)
async def test_bad_entries_name_the_field(
    app_conn: asyncpg.Connection, values: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await add_entry(app_conn, ADMIN, **values)  # type: ignore[arg-type]  # a bad value on purpose
    assert caught.value.field == field
    assert await app_conn.fetchval("SELECT count(*) FROM audit_log") == 0
