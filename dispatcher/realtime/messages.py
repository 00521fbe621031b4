"""Realtime messages (triggers, operator sends): units of work in PostgreSQL, references on the queue.

One triggered or operator message is one row of ``realtime_messages``: its client, pinned
template version, channel chain, the chain step to try next and when it is due. What is
published is only (row, step) on the realtime queue of the client's shard, which every
worker consumes on a channel of its own, so it never waits behind a campaign's batches.
The row is committed before its reference is published; a reference lost on the way (a
crash between commit and publish, a broker that lost it) is published again by the
scheduler's sweep (``publish_due``), which also publishes delayed messages when due. A
worker acts on a reference only while the row is not done and still at that step, so a
reference published twice, or one for a step already left, costs one lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import aio_pika
import asyncpg
import msgspec

from dispatcher import outcomes, topology
from dispatcher.envelopes import RealtimeMessages, realtime_message_id
from dispatcher.outcomes import Event
from dispatcher.topology import shard_of
from herald.settings import Settings
from rules import fallback

# A reference published this long ago whose row is still not done is published again.
STALE_SECONDS = 60.0
# References per queue message: what was created together is handled together.
REFS_PER_MESSAGE = 200

Work = list[tuple[int, tuple[int, int]]]  # (client id, (realtime_messages.id, step))
_ENCODE = msgspec.json.Encoder()


class NewMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A realtime message to create; ``refused`` (a reason) records it as skipped, never sent."""

    kind: str  # trigger | operator
    client_id: int
    template_id: int
    template_version: int
    channel_chain: Sequence[str]
    receipt_timeout_seconds: int = 900
    delay_seconds: int = 0
    account_id: int | None = None
    rule_id: int | None = None
    producer_id: int | None = None
    event_id: str | None = None
    created_by: int | None = None
    refused: str | None = None
    # Template variables of this message alone (a case reply's text), over the client's.
    variables: dict[str, object] | None = None


class Created(msgspec.Struct, frozen=True):
    id: int
    client_id: int
    message_id: str  # the id of its first step
    refused: str | None
    delayed: bool


_INSERT = """
INSERT INTO realtime_messages (kind, client_id, account_id, rule_id, producer_id, event_id,
                               template_id, template_version, channel_chain,
                               receipt_timeout_seconds, created_by, refused, done, due_at,
                               published_at, done_at, variables)
SELECT k, c, a, r, p, e, t, v, string_to_array(ch, ','), rt, cb, rf, rf IS NOT NULL,
       herald_now() + make_interval(secs => d),
       CASE WHEN d = 0 AND rf IS NULL THEN herald_now() END,
       CASE WHEN rf IS NOT NULL THEN herald_now() END, vr::jsonb
FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[],
            $7::bigint[], $8::int[], $9::text[], $10::int[], $11::bigint[], $12::text[],
            $13::int[], $14::text[]) WITH ORDINALITY AS n(k, c, a, r, p, e, t, v, ch, rt, cb, rf,
                                                         d, vr, o)
ORDER BY o
RETURNING id, kind, client_id, refused, due_at > herald_now() AS delayed, channel_chain
"""


async def create(
    conn: asyncpg.Connection, items: Sequence[NewMessage]
) -> tuple[list[Created], Work]:
    """Insert messages (in the caller's transaction) with a 'queued' or 'skipped' event each.

    Returns what was created, in order, and the references to publish once the
    transaction committed (the due ones; delayed ones wait for the scheduler's sweep).
    """
    if not items:
        return [], []
    rows = await conn.fetch(
        _INSERT,
        [i.kind for i in items],
        [i.client_id for i in items],
        [i.account_id for i in items],
        [i.rule_id for i in items],
        [i.producer_id for i in items],
        [i.event_id for i in items],
        [i.template_id for i in items],
        [i.template_version for i in items],
        [",".join(i.channel_chain) for i in items],
        [i.receipt_timeout_seconds for i in items],
        [i.created_by for i in items],
        [i.refused for i in items],
        [i.delay_seconds for i in items],
        [None if i.variables is None else _ENCODE.encode(i.variables).decode() for i in items],
    )
    created: list[Created] = []
    events: list[Event] = []
    work: Work = []
    for row in rows:
        mid = realtime_message_id(row["kind"], row["id"], row["client_id"], 0)
        first_channel = row["channel_chain"][0]
        created.append(Created(row["id"], row["client_id"], mid, row["refused"], row["delayed"]))
        if row["refused"]:
            events.append(
                Event(mid, None, row["client_id"], 0, first_channel, "skipped", row["refused"])
            )
            continue
        events.append(
            Event(
                mid,
                None,
                row["client_id"],
                0,
                first_channel,
                "queued",
                "delayed" if row["delayed"] else None,
            )
        )
        if not row["delayed"]:
            work.append((row["client_id"], (row["id"], 0)))
    await outcomes.write_events(conn, events)
    return created, work


async def publish(channel: aio_pika.abc.AbstractChannel, settings: Settings, work: Work) -> None:
    """Publish references to the realtime queues of their shards (after the rows committed)."""
    if work:
        # Routed by the first client's shard: realtime work needs no shard affinity, and
        # this spreads it over the workers like the clients themselves.
        await topology.publish(
            channel,
            settings,
            [
                (
                    shard_of(work[i][0], settings.shards),
                    RealtimeMessages([ref for _, ref in work[i : i + REFS_PER_MESSAGE]]),
                )
                for i in range(0, len(work), REFS_PER_MESSAGE)
            ],
            realtime=True,
        )


async def advance(
    conn: asyncpg.Connection,
    channel: aio_pika.abc.AbstractChannel,
    settings: Settings,
    failed: Sequence[tuple[int, int]],
    event: Callable[[int], fallback.Event] = fallback.ReceiptTimeout,
) -> int:
    """Reopen messages whose step failed (``event``: a failed receipt or a timeout) at the
    step the fallback state machine names.

    ``failed``: (message row id, failed step). A message at another step already, or
    at the end of its chain, is left alone. Returns how many were reopened. A receipt can
    overtake the worker's commit of the step it answers (the row is then not done yet):
    the row moves on all the same, and that commit leaves a row at a later step alone.
    """
    if not failed:
        return 0
    found = await conn.fetch(
        """
        SELECT m.id, f.s, m.channel_chain, m.receipt_timeout_seconds
        FROM realtime_messages m JOIN unnest($1::bigint[], $2::int[]) AS f(u, s) ON m.id = f.u
        WHERE m.step = f.s AND m.refused IS NULL
        """,
        [u for u, _ in failed],
        [s for _, s in failed],
    )
    moves: list[tuple[int, int, int]] = []
    for row in found:
        chain = fallback.chain_of(row["channel_chain"], row["receipt_timeout_seconds"])
        step = row["s"]
        if 0 <= step < len(chain.steps):
            following = fallback.next_step(chain, step, event(step))
            if following is not None:
                moves.append((row["id"], step, following))
    if not moves:
        return 0
    rows = await conn.fetch(
        """
        UPDATE realtime_messages m
        SET step = f.n, done = false, done_at = NULL, due_at = herald_now(), published_at = herald_now()
        FROM unnest($1::bigint[], $2::int[], $3::int[]) AS f(u, s, n)
        WHERE m.id = f.u AND m.step = f.s
        RETURNING m.id, m.client_id, m.step
        """,
        [u for u, _, _ in moves],
        [s for _, s, _ in moves],
        [n for _, _, n in moves],
    )
    await publish(channel, settings, _work(rows))
    return len(rows)


async def reopen(conn: asyncpg.Connection, released: Sequence[tuple[int, int]]) -> Work:
    """Reopen held messages at their held step (in the caller's transaction); publish after commit."""
    if not released:
        return []
    rows = await conn.fetch(
        """
        UPDATE realtime_messages m
        SET step = f.s, done = false, done_at = NULL, due_at = herald_now(), published_at = herald_now()
        FROM unnest($1::bigint[], $2::int[]) AS f(u, s)
        WHERE m.id = f.u
        RETURNING m.id, m.client_id, m.step
        """,
        [u for u, _ in released],
        [s for _, s in released],
    )
    return _work(rows)


async def publish_due(
    pool: asyncpg.Pool,
    channel: aio_pika.abc.AbstractChannel,
    settings: Settings,
    *,
    limit: int = 1000,
    stale_seconds: float = STALE_SECONDS,
) -> int:
    """Publish delayed messages now due, and again any whose reference went missing."""
    total = 0
    while True:
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                """
                WITH due AS (
                    SELECT id FROM realtime_messages
                    WHERE NOT done AND due_at <= herald_now()
                      AND (published_at IS NULL
                           OR published_at < herald_now() - make_interval(secs => $2))
                    ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED)
                UPDATE realtime_messages m SET published_at = herald_now()
                FROM due WHERE m.id = due.id
                RETURNING m.id, m.client_id, m.step
                """,
                limit,
                stale_seconds,
            )
        await publish(channel, settings, _work(rows))
        total += len(rows)
        if len(rows) < limit:
            return total


def _work(rows: Sequence[asyncpg.Record]) -> Work:
    return [(r["client_id"], (r["id"], r["step"])) for r in rows]
