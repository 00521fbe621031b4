"""Segment membership for the send-time stop-list check (rules.stop_lists.SegmentMembership)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg


class SegmentMembers:
    """Answers on the caller's connection, in one query by the members' primary key.

    Made per batch around the connection the batch already holds:
    ``stop_lists.blocked_clients(conn, ids, topic, membership=SegmentMembers(conn))``.
    """

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def members_among(
        self, segment_ids: Sequence[int], client_ids: Sequence[int]
    ) -> set[int]:
        """The clients of ``client_ids`` that belong to at least one of ``segment_ids``."""
        if not segment_ids or not client_ids:
            return set()
        rows = await self._conn.fetch(
            "SELECT DISTINCT m.client_id FROM segment_members m "
            "WHERE m.segment_id = ANY($1::bigint[]) AND m.client_id = ANY($2::bigint[])",
            list(segment_ids),
            list(client_ids),
        )
        return {r["client_id"] for r in rows}
