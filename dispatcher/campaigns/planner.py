"""Launching a campaign: snapshot the audience into shard batches, then publish references.

The audience never passes through Python: one INSERT ... SELECT groups it by shard into
batches of ``batch_size`` client ids inside PostgreSQL. What is published is only
(campaign, batch) references, a few dozen bytes each; publishing them again is harmless,
because workers skip batches already done and message ids already sent.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import aio_pika
import asyncpg

from dispatcher import topology
from dispatcher.campaigns.types import Audience, ClientsAudience, SegmentAudience
from dispatcher.envelopes import CampaignBatch, Envelope
from dispatcher.topology import shard_of
from herald.settings import Settings

log = logging.getLogger("herald.planner")

_AUDIENCE_SQL = {
    # Explicit list: only ids of existing clients, each once.
    "clients": "SELECT c.id AS client_id FROM clients c WHERE c.id = ANY($4::bigint[])",
    # Every client with an active account, optionally only in some regions.
    "all": "SELECT c.id AS client_id FROM clients c WHERE EXISTS ("
    " SELECT 1 FROM accounts a WHERE a.client_id = c.id AND a.status = 'active'"
    " AND ($4::text[] IS NULL OR a.region_code = ANY($4::text[])))",
    # The members of a segment at this moment (a dynamic one as the scheduler last
    # brought it up to date); read by its primary key, in client_id order.
    "segment": "SELECT m.client_id FROM segment_members m WHERE m.segment_id = $4::bigint",
}


async def snapshot(
    conn: asyncpg.Connection, campaign_id: int, audience: Audience, shards: int, batch_size: int
) -> tuple[int, int]:
    """Freeze the audience into campaign_batches; returns (recipients, batches). In a transaction."""
    argument: object
    if isinstance(audience, ClientsAudience):
        query, argument = _AUDIENCE_SQL["clients"], audience.client_ids
    elif isinstance(audience, SegmentAudience):
        query, argument = _AUDIENCE_SQL["segment"], audience.segment_id
    else:
        query, argument = _AUDIENCE_SQL["all"], audience.regions
    await conn.execute("DELETE FROM campaign_batches WHERE campaign_id = $1", campaign_id)
    await conn.execute(
        f"""
        INSERT INTO campaign_batches (campaign_id, step, batch_no, shard, client_ids)
        SELECT $1, 0, (row_number() OVER (ORDER BY chunk, shard))::int - 1, shard, ids
        FROM (
            SELECT shard, chunk, array_agg(client_id ORDER BY client_id) AS ids
            FROM (
                SELECT client_id, herald_shard(client_id, $2) AS shard,
                       (row_number() OVER (PARTITION BY herald_shard(client_id, $2)
                                           ORDER BY client_id) - 1) / $3 AS chunk
                FROM ({query}) audience
            ) numbered
            GROUP BY shard, chunk
        ) grouped
        """,
        campaign_id,
        shards,
        batch_size,
        argument,
    )
    row = await conn.fetchrow(
        "SELECT count(*) AS batches, coalesce(sum(cardinality(client_ids)), 0) AS recipients "
        "FROM campaign_batches WHERE campaign_id = $1",
        campaign_id,
    )
    return int(row["recipients"]), int(row["batches"])


async def publish_pending_batches(
    conn: asyncpg.Connection,
    channel: aio_pika.abc.AbstractChannel,
    settings: Settings,
    campaign_id: int,
) -> int:
    """Publish references to every batch of the campaign not done yet; returns how many."""
    rows = await conn.fetch(
        "SELECT id, shard FROM campaign_batches WHERE campaign_id = $1 AND NOT done ORDER BY id",
        campaign_id,
    )
    await topology.publish(
        channel, settings, [(r["shard"], CampaignBatch(campaign_id, r["id"])) for r in rows]
    )
    return len(rows)


async def record_steps(
    conn: asyncpg.Connection,
    settings: Settings,
    campaign_id: int,
    step: int,
    client_ids: Sequence[int],
) -> list[tuple[int, Envelope]]:
    """Record recipients for a chain step as pending batches (by shard); return what to publish.

    Publish only after the recording committed (a worker looks the batch up), and a crash
    in between leaves pending batches that the stalled-work sweep publishes; the campaign
    cannot be taken for finished meanwhile.
    """
    by_shard: dict[int, list[int]] = {}
    for client_id in client_ids:
        by_shard.setdefault(shard_of(client_id, settings.shards), []).append(client_id)
    # Flat arrays (chunk number, shard, client id per element): one statement for all.
    chunk_of: list[int] = []
    shard_of_element: list[int] = []
    flat: list[int] = []
    chunk = 0
    for shard, ids in by_shard.items():
        for start in range(0, len(ids), settings.dispatch_batch_size):
            part = ids[start : start + settings.dispatch_batch_size]
            chunk_of += [chunk] * len(part)
            shard_of_element += [shard] * len(part)
            flat += part
            chunk += 1
    if not flat:
        return []
    rows = await conn.fetch(
        """
        INSERT INTO campaign_batches (campaign_id, step, shard, client_ids)
        SELECT $1, $2, min(s), array_agg(c ORDER BY o)
        FROM unnest($3::int[], $4::int[], $5::bigint[]) WITH ORDINALITY AS t(k, s, c, o)
        GROUP BY k
        RETURNING id, shard
        """,
        campaign_id,
        step,
        chunk_of,
        shard_of_element,
        flat,
    )
    return [(r["shard"], CampaignBatch(campaign_id, r["id"])) for r in rows]
