"""Producer events in: validate each, store each once, match trigger rules, apply contact policy.

A batch (up to 1,000 events) is handled in one transaction: the events new to this
producer are inserted (a repeated event id is acknowledged as a duplicate and never
processed again: the primary key decides, also between concurrent posts), the active
rules of their types are matched, the contact policy is checked under a per (rule,
client) advisory lock, and the messages are created as realtime units. The caller
publishes the returned references once the transaction committed. A bad item gets an
error naming its index and field; the good items of the same batch are accepted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from msgspec import Meta

from dispatcher.realtime import messages as realtime
from dispatcher.realtime import triggers
from dispatcher.realtime.producers import Producer
from dispatcher.realtime.triggers import EventType, TriggerRule

MAX_BATCH = 1000


class EventIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One event: the producer's own id (the idempotency key), type, client, time, data."""

    event_id: Annotated[str, Meta(min_length=1, max_length=200)]
    type: EventType
    occurred_at: dt.datetime
    client_id: Annotated[int, Meta(ge=1, le=2**63 - 1)] | None = None
    or_number: Annotated[str, Meta(pattern=r"^[0-9]{10}$")] | None = None
    data: dict[str, Any] = {}


class EventBatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One event or up to 1,000; each is validated on its own."""

    events: Annotated[list[msgspec.Raw], Meta(min_length=1, max_length=MAX_BATCH)]


class ItemError(msgspec.Struct, frozen=True):
    index: int
    field: str
    message: str


class ItemResult(msgspec.Struct, frozen=True):
    index: int
    event_id: str
    status: Literal["accepted", "duplicate"]
    # Message ids (of the first chain step) created for it, and contact-policy refusals.
    messages: list[str] = []
    refused: list[str] = []


class IngestResult(msgspec.Struct, frozen=True):
    accepted: int
    duplicates: int
    rejected: int
    results: list[ItemResult]
    errors: list[ItemError]


async def ingest(
    conn: asyncpg.Connection,
    producer: Producer,
    items: Sequence[tuple[int, EventIn]],
    errors: list[ItemError],
) -> tuple[IngestResult, realtime.Work]:
    """Store and process a producer's valid items; returns the result and what to publish."""
    allowed = set(producer.event_types)
    checked: list[tuple[int, EventIn]] = []
    for index, event in items:
        if event.type not in allowed:
            errors.append(
                ItemError(
                    index,
                    "type",
                    f"this producer may not post {event.type!r}; "
                    f"allowed: {', '.join(sorted(allowed))}",
                )
            )
        else:
            checked.append((index, event))
    accounts = await _accounts_by_or(conn, [e.or_number for _, e in checked if e.or_number])
    pairs: list[tuple[int, int | None]] = []
    resolved: list[tuple[int, EventIn]] = []
    for index, event in checked:
        if event.or_number is not None:
            found = accounts.get(event.or_number)
            if found is None:
                errors.append(ItemError(index, "or_number", f"no account {event.or_number}"))
                continue
            pairs.append(found)
        else:
            # The view lets through only events with exactly one of client_id and or_number.
            pairs.append((event.client_id, None))  # type: ignore[arg-type]  # see above
        resolved.append((index, event))
    attributes = await triggers.client_attributes(conn, pairs)
    known: list[tuple[int, EventIn, dict[str, Any]]] = []
    for (index, event), attrs in zip(resolved, attributes, strict=True):
        if attrs is None:
            errors.append(ItemError(index, "client_id", f"no client {event.client_id}"))
        else:
            known.append((index, event, attrs))
    results: dict[int, ItemResult] = {}
    work: realtime.Work = []
    async with conn.transaction():
        fresh = await _store(conn, producer, known)
        for index, event, _ in known:
            if index not in fresh:
                results[index] = ItemResult(index, event.event_id, "duplicate")
        todo = [k for k in known if k[0] in fresh]
        rules = await triggers.active_rules(conn, [e.type for _, e, _ in todo])
        candidates = [
            (index, event, attrs, rule)
            for index, event, attrs in todo
            for rule in rules.get(event.type, ())
            if triggers.matches(rule, event.data, attrs)
        ]
        refusals = await _contact_policy(
            conn, [(rule, attrs["client_id"]) for _, _, attrs, rule in candidates]
        )
        created, work = await realtime.create(
            conn,
            [
                realtime.NewMessage(
                    kind="trigger",
                    client_id=attrs["client_id"],
                    account_id=attrs["account_id"] if event.or_number else None,
                    template_id=rule.template_id,
                    template_version=rule.template_version,
                    channel_chain=rule.channel_chain,
                    receipt_timeout_seconds=rule.receipt_timeout_seconds,
                    delay_seconds=rule.delay_seconds,
                    rule_id=rule.id,
                    producer_id=producer.id,
                    event_id=event.event_id,
                    refused=refused,
                )
                for (index, event, attrs, rule), refused in zip(candidates, refusals, strict=True)
            ],
        )
        made: dict[int, list[str]] = {}
        refused_of: dict[int, list[str]] = {}
        for (index, *_), unit in zip(candidates, created, strict=True):
            if unit.refused:
                refused_of.setdefault(index, []).append(unit.refused)
            else:
                made.setdefault(index, []).append(unit.message_id)
        if made:
            await conn.execute(
                "UPDATE producer_events e SET messages = n.m FROM unnest($2::text[], $3::int[]) "
                "AS n(id, m) WHERE e.producer_id = $1 AND e.event_id = n.id",
                producer.id,
                [fresh[i] for i in made],
                [len(v) for v in made.values()],
            )
        for index, event, _ in todo:
            results[index] = ItemResult(
                index, event.event_id, "accepted", made.get(index, []), refused_of.get(index, [])
            )
    ordered = [results[i] for i in sorted(results)]
    errors.sort(key=lambda e: e.index)
    accepted = sum(r.status == "accepted" for r in ordered)
    return IngestResult(
        accepted, len(ordered) - accepted, len({e.index for e in errors}), ordered, errors
    ), work


async def _accounts_by_or(
    conn: asyncpg.Connection, numbers: Sequence[str]
) -> dict[str, tuple[int, int]]:
    if not numbers:
        return {}
    rows = await conn.fetch(
        "SELECT or_number, client_id, id FROM accounts WHERE or_number = ANY($1::text[])",
        list(set(numbers)),
    )
    return {r["or_number"]: (r["client_id"], r["id"]) for r in rows}


async def _store(
    conn: asyncpg.Connection,
    producer: Producer,
    known: Sequence[tuple[int, EventIn, dict[str, Any]]],
) -> dict[int, str]:
    """Insert the events not seen before; index -> event id of those this call stored."""
    first: dict[str, int] = {}
    for index, event, _ in known:
        first.setdefault(event.event_id, index)  # a repeat inside the batch is a duplicate
    chosen = [(i, e, a) for i, e, a in known if first[e.event_id] == i]
    if not chosen:
        return {}
    rows = await conn.fetch(
        """
        INSERT INTO producer_events (producer_id, event_id, type, client_id, occurred_at, data)
        SELECT $1, e, t, c, o, d
        FROM unnest($2::text[], $3::text[], $4::bigint[], $5::timestamptz[], $6::jsonb[])
             AS n(e, t, c, o, d)
        ON CONFLICT (producer_id, event_id) DO NOTHING
        RETURNING event_id
        """,
        producer.id,
        [e.event_id for _, e, _ in chosen],
        [e.type for _, e, _ in chosen],
        [a["client_id"] for _, _, a in chosen],
        [e.occurred_at for _, e, _ in chosen],
        [e.data for _, e, _ in chosen],
    )
    stored = {r["event_id"] for r in rows}
    return {i: e.event_id for i, e, _ in chosen if e.event_id in stored}


async def _contact_policy(
    conn: asyncpg.Connection, candidates: Sequence[tuple[TriggerRule, int]]
) -> list[str | None]:
    """For each (rule, client) in order: None to send, or the contact-policy reason refusing it.

    A rule's policy counts the client's earlier messages of that rule, or (scope
    "client") every triggered message of the client, and those allowed earlier in this
    batch. Serialised per client by transaction-scoped advisory locks taken in one order
    (every candidate client, with or without a policy: a message of a rule without one
    still counts for another rule's client-wide policy), so two concurrent batches cannot
    both take the last allowed message.
    """
    decided: list[str | None] = [None] * len(candidates)
    if not candidates:
        return decided
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('herald.contact_policy:' || c, 0)) "
        "FROM unnest($1::bigint[]) AS k(c)",
        sorted({c for _, c in candidates}),
    )
    limited = [(r, c) for r, c in candidates if r.max_messages or r.min_interval_seconds]
    if not limited:
        return decided
    window = max(max(r.period_seconds or 0, r.min_interval_seconds or 0) for r, _ in limited)
    rows = await conn.fetch(
        """
        SELECT herald_now() AS now, m.client_id, m.rule_id, m.created_at
        FROM realtime_messages m
        WHERE m.client_id = ANY($1::bigint[]) AND m.kind = 'trigger' AND m.refused IS NULL
          AND m.created_at > herald_now() - make_interval(secs => $2)
        """,
        sorted({c for _, c in limited}),
        window,
    )
    now = rows[0]["now"] if rows else await conn.fetchval("SELECT herald_now()")
    sent: dict[int, list[tuple[int | None, dt.datetime]]] = {}
    for row in rows:
        sent.setdefault(row["client_id"], []).append((row["rule_id"], row["created_at"]))
    for i, (rule, client) in enumerate(candidates):
        earlier = sent.setdefault(client, [])
        if rule.max_messages or rule.min_interval_seconds:
            counted = [
                at for rule_id, at in earlier if rule.policy_scope == "client" or rule_id == rule.id
            ]
            if (
                rule.max_messages is not None
                and rule.period_seconds is not None
                and sum((now - at).total_seconds() < rule.period_seconds for at in counted)
                >= rule.max_messages
            ):
                decided[i] = "contact_policy:max_messages"
                continue
            if (
                rule.min_interval_seconds is not None
                and counted
                and (now - max(counted)).total_seconds() < rule.min_interval_seconds
            ):
                decided[i] = "contact_policy:min_interval"
                continue
        earlier.append((rule.id, now))
    return decided
