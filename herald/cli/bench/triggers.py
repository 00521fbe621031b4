"""Trigger latency: event posted to Herald -> message handed to the provider, at a steady rate.

``trigger_latency`` runs against the database of ``settings`` (the 13 M one for the
segments benchmark, which calls it twice: idle, and while a big campaign runs). Set-up
(not measured): a producer, an urgent SMS template (exempt from quiet hours, so the
time of day does not matter) and one trigger rule; the admin API, the simulators and
the workers started as processes of their own, as in production, on free ports and a
namespace of their own. Measured: each event's latency from the moment its POST
started to the moment the SMS simulator received the message (both clocks are this
host's). Events go in batches every 20 ms, one client each, never awaiting the previous
post. ``during_campaign`` first launches a campaign by Viber to the active accounts of
regions adding up to ~5 M, waits until it is sending, measures, then stops it; only the
events posted before the campaign's last batch was done count (a campaign over a
scratch database of 100-200 k clients is sent in less time than the measurement).
Afterwards the rule, the producer and their messages are deleted; the stopped campaign
and the template stay (campaigns reference them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import msgspec
import redis.asyncio as aioredis

from dispatcher.campaigns import store as campaigns
from dispatcher.campaigns.control import publish_state
from dispatcher.campaigns.types import AllClientsAudience, CampaignSpec
from dispatcher.realtime import producers, triggers
from dispatcher.templating import store as template_store
from dispatcher.templating.templates import TemplateDraft, TemplateEngine, Variants
from dispatcher.topology import declare_topology, queue_names
from herald.audit import SYSTEM
from herald.cli.bench.campaign import Processes, wait_http
from herald.db import init_connection
from herald.errors import Conflict
from herald.settings import Settings, load_settings

Say = Callable[[str], None]

CAMPAIGN_TARGET = 5_000_000
_TICK = 0.02


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


class _Setup(msgspec.Struct):
    producer_id: int
    key: str
    rule_id: int
    clients: list[int]


async def _prepare(conn: asyncpg.Connection, n: int, tag: str) -> _Setup:
    if not await conn.fetchval("SELECT to_regclass('trigger_rules') IS NOT NULL"):
        raise RuntimeError("the database lacks migration 0015_triggers: run herald migrate")
    # Clients with a phone on their primary account, spread over the id range.
    clients = [
        r[0]
        for r in await conn.fetch(
            """
        SELECT c.id FROM clients c
        WHERE c.id % 7 = 3 AND EXISTS (
            SELECT 1 FROM accounts a JOIN account_contacts ac ON ac.account_id = a.id AND ac.is_active
            JOIN contacts ct ON ct.id = ac.contact_id AND ct.is_active AND ct.phone IS NOT NULL
            WHERE a.client_id = c.id AND a.status = 'active')
          AND NOT EXISTS (SELECT 1 FROM consents s WHERE s.client_id = c.id AND s.channel = 'sms'
                          AND s.topic = 'service' AND NOT s.opted_in)
        LIMIT $1
        """,
            n,
        )
    ]
    if len(clients) < n:
        raise RuntimeError(f"only {len(clients)} clients with a phone found; {n} needed")
    draft = TemplateDraft(
        name=f"bench trigger {tag}",
        variants=msgspec.convert(
            {"sms": {"text": "{{ first_name }}, платіж за ОР {{ or_number }} отримано. Дякуємо!"}},
            Variants,
        ),
    )
    template, _ = await template_store.create(
        conn, SYSTEM, TemplateEngine(), draft=draft, topic="service", urgent=True
    )
    created = await producers.create(
        conn, SYSTEM, producers.ProducerSpec(name=f"bench {tag}", event_types=["payment.received"])
    )
    rule = await triggers.create_rule(
        conn,
        SYSTEM,
        triggers.TriggerRuleSpec(
            name=f"bench {tag}",
            event_type="payment.received",
            template_id=template.id,
            channel_chain=["sms"],
        ),
    )
    return _Setup(created.producer.id, created.api_key, rule.id, clients)


async def _cleanup(conn: asyncpg.Connection, setup: _Setup) -> None:
    async with conn.transaction():
        await conn.execute("DELETE FROM realtime_messages WHERE rule_id = $1", setup.rule_id)
        await conn.execute("DELETE FROM trigger_rules WHERE id = $1", setup.rule_id)
        await conn.execute("DELETE FROM producer_events WHERE producer_id = $1", setup.producer_id)
        await conn.execute("DELETE FROM producers WHERE id = $1", setup.producer_id)


async def _start_campaign(conn: asyncpg.Connection, tag: str, say: Say) -> int:
    """A Viber campaign to the active accounts of regions adding up to ~5 M; launched now."""
    counts = await conn.fetch(
        "SELECT region_code, count(*) AS n FROM accounts "
        "WHERE status = 'active' GROUP BY 1 ORDER BY 2 DESC"
    )
    regions, total = [], 0
    for row in counts:
        if total >= CAMPAIGN_TARGET:
            break
        regions.append(row["region_code"])
        total += row["n"]
    draft = TemplateDraft(
        name=f"bench campaign {tag}",
        variants=msgspec.convert(
            {"viber": {"text": "{{ first_name }}, нагадуємо про оплату за ОР {{ or_number }}."}},
            Variants,
        ),
    )
    template, _ = await template_store.create(
        conn, SYSTEM, TemplateEngine(), draft=draft, topic="service", urgent=True
    )
    campaign = await campaigns.create(
        conn,
        SYSTEM,
        CampaignSpec(
            name=f"bench: trigger latency during a campaign {tag}",
            template_id=template.id,
            audience=AllClientsAudience(regions=regions or None),
            channel_chain=["viber"],
            receipt_timeout_seconds=600,
        ),
    )
    await campaigns.launch(conn, SYSTEM, campaign.id, None)
    say(f"campaign {campaign.id} launched to ~{total:,} accounts in {len(regions)} regions")
    return campaign.id


async def _post_events(
    session: aiohttp.ClientSession,
    url: str,
    key: str,
    clients: list[int],
    rate: int,
    seconds: float,
    tag: str,
) -> dict[str, float]:
    """Post events at ``rate``/s; message id -> the time its event's POST started."""
    tick = max(_TICK, 1.0 / rate)
    per_tick = max(1, round(rate * tick))
    started: dict[str, float] = {}
    pending: set[asyncio.Task[None]] = set()
    errors = 0

    async def one(batch: list[dict[str, Any]]) -> None:
        nonlocal errors
        at = time.time()
        async with session.post(
            url, json={"events": batch}, headers={"Authorization": f"Bearer {key}"}
        ) as response:
            body = await response.json()
            if response.status != 200:
                errors += len(batch)
                return
        for result in body["results"]:
            for mid in result["messages"]:
                started[mid] = at

    begin = time.monotonic()
    sent = 0
    occurred = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    while time.monotonic() - begin < seconds and sent < len(clients):
        batch = [
            {
                "event_id": f"{tag}-{sent + i}",
                "type": "payment.received",
                "client_id": clients[sent + i],
                "occurred_at": occurred,
                "data": {"amount": 100 + i},
            }
            for i in range(min(per_tick, len(clients) - sent))
        ]
        sent += len(batch)
        task = asyncio.create_task(one(batch))
        pending.add(task)
        task.add_done_callback(pending.discard)
        target = begin + (sent / per_tick) * tick
        await asyncio.sleep(max(0.0, target - time.monotonic()))
    if pending:
        await asyncio.gather(*pending)
    if errors:
        raise RuntimeError(f"{errors} events were refused by the API")
    return started


async def _handed_off(
    session: aiohttp.ClientSession, sim: str, wanted: dict[str, float], wait: float
) -> dict[str, float]:
    """Message id -> when the SMS simulator received it, for the wanted ids (waits for stragglers)."""
    deadline = time.monotonic() + wait
    while True:
        async with session.get(f"{sim}/sms/sim/messages", params={"limit": "1000000"}) as response:
            records = (await response.json())["messages"]
        found = {r["message_id"]: r["at"] for r in records if r["message_id"] in wanted}
        if len(found) == len(wanted) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(1.0)


async def trigger_latency(
    settings: Settings,
    *,
    rate: int = 500,
    seconds: float = 20,
    during_campaign: bool = False,
    workers: int = 2,
    say: Say | None = None,
) -> dict[str, float]:
    """p50 and p99 (ms) from event POST to provider hand-off at ``rate`` events/s."""
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    tag = uuid.uuid4().hex[:8]
    api_port, sim_port, smtp_port = _free_port(), _free_port(), _free_port()
    sim = f"http://127.0.0.1:{sim_port}"
    run = msgspec.structs.replace(
        settings,
        namespace=f"benchtrig{tag}",
        http_port=api_port,
        simulators_port=sim_port,
        public_base_url=f"http://127.0.0.1:{api_port}",
        sms_gateway_url=f"{sim}/sms",
        viber_api_url=f"{sim}/viber",
        smtp_port=smtp_port,
        log_level="WARNING",
    )
    conn = await asyncpg.connect(settings.database_url)
    await init_connection(conn)
    campaign_id = None
    procs = None
    setup = await _prepare(conn, int(rate * seconds) + rate, tag)
    say(f"namespace {run.namespace}, API port {api_port}, simulators port {sim_port}")
    try:
        await _queues(run, declare=True)  # nothing published before the workers are up is lost
        procs = Processes(run, workers)
        await wait_http(f"http://127.0.0.1:{api_port}/healthz", 60)
        await wait_http(f"{sim}/healthz", 60)
        await _wait_consumers(run, 60)
        async with aiohttp.ClientSession() as session:
            async with session.put(
                f"{sim}/sms/sim/config", json={"keep_messages": int(rate * seconds) * 2 + 1000}
            ) as r:
                r.raise_for_status()
            if during_campaign:
                campaign_id = await _start_campaign(conn, tag, say)
                await _wait_sending(conn, campaign_id, say)
            say(f"posting {rate} events/s for {seconds:g} s")
            started = await _post_events(
                session,
                f"http://127.0.0.1:{api_port}/api/v1/events",
                setup.key,
                setup.clients,
                rate,
                seconds,
                tag,
            )
            handed = await _handed_off(session, sim, started, wait=60)
        lost = len(started) - len(handed)
        say(f"{len(started):,} triggered messages, {len(handed):,} handed off, {lost} not in 60 s")
        if campaign_id is not None:
            handed = await _while_sending(conn, campaign_id, started, handed, say)
        latencies = [(handed[m] - started[m]) * 1000 for m in handed]
        if not latencies:
            raise RuntimeError("no triggered message reached the provider")
        return {
            "p50": round(_percentile(latencies, 0.50), 1),
            "p99": round(_percentile(latencies, 0.99), 1),
        }
    finally:
        try:
            if campaign_id is not None:
                try:
                    await campaigns.transition(conn, SYSTEM, campaign_id, "stop")
                    await redis_state(run, campaign_id, "stopped")
                except Conflict:
                    pass  # it completed on its own
        finally:
            if procs is not None:
                procs.stop()
            await _queues(run, declare=False)
            await _forget_keys(run)
            await _cleanup(conn, setup)
            await conn.close()


async def _queues(settings: Settings, *, declare: bool) -> None:
    """Declare the run's dispatch queues, or delete them afterwards."""
    connection = await aio_pika.connect_robust(settings.amqp_url)
    try:
        channel = await connection.channel()
        if declare:
            await declare_topology(channel, settings)
            return
        for shard in range(settings.shards):
            for name in queue_names(settings, shard):
                await channel.queue_delete(name)
        await channel.queue_delete(f"{settings.namespace}.dispatch.dead")
    finally:
        await connection.close()


async def _wait_consumers(settings: Settings, seconds: float) -> None:
    """Until every realtime queue of the run has a worker consuming it."""
    deadline = time.monotonic() + seconds
    connection = await aio_pika.connect_robust(settings.amqp_url)
    try:
        while True:
            counts = []
            # A fresh channel per look: a channel answers a repeated passive declare from cache.
            async with connection.channel() as channel:
                for shard in range(settings.shards):
                    queue = await channel.declare_queue(
                        queue_names(settings, shard)[0], passive=True
                    )
                    counts.append(queue.declaration_result.consumer_count)
            if all(counts):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers did not start consuming in {seconds} s")
            await asyncio.sleep(0.2)
    finally:
        await connection.close()


async def _wait_sending(conn: asyncpg.Connection, campaign_id: int, say: Say) -> None:
    """Until the campaign's snapshot is done and its first batches are sent."""
    began = time.monotonic()
    while True:
        row = await conn.fetchrow(
            "SELECT status, audience_size, (SELECT count(*) FROM campaign_batches "
            "WHERE campaign_id = $1 AND done) AS done FROM campaigns WHERE id = $1",
            campaign_id,
        )
        if row["status"] == "running" and row["done"] > 0:
            say(
                f"campaign sending to {row['audience_size']:,} after "
                f"{time.monotonic() - began:.0f} s; measuring now"
            )
            return
        if row["status"] not in ("scheduled", "launching", "running"):
            raise RuntimeError(f"campaign {campaign_id} is {row['status']}")
        await asyncio.sleep(1.0)


async def _while_sending(
    conn: asyncpg.Connection,
    campaign_id: int,
    started: dict[str, float],
    handed: dict[str, float],
    say: Say,
) -> dict[str, float]:
    """The hand-offs of the events posted while the campaign still had batches to send."""
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE NOT done) AS left, max(done_at) AS last "
        "FROM campaign_batches WHERE campaign_id = $1",
        campaign_id,
    )
    if row["left"] or row["last"] is None:
        say("the campaign was still sending when the measurement ended")
        return handed
    cutoff = row["last"].timestamp()
    during = {m: t for m, t in handed.items() if started[m] < cutoff}
    say(
        f"the campaign's last batch was done {cutoff - min(started.values()):.1f} s into the "
        f"measurement: {len(during):,} of {len(started):,} events posted while it was sending"
    )
    return during


async def _forget_keys(settings: Settings) -> None:
    """Delete the run's Redis keys (its namespace is its own)."""
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{settings.namespace}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def redis_state(settings: Settings, campaign_id: int, status: str) -> None:
    """Mirror a campaign's status for the workers (as the API does after a transition)."""
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        await publish_state(client, settings, campaign_id, status)
    finally:
        await client.aclose()


def main() -> None:
    """``python -m herald.cli.bench.triggers [--during-campaign]``: the figures as one JSON line."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--during-campaign", action="store_true")
    args = parser.parse_args()
    figures = asyncio.run(
        trigger_latency(
            load_settings(os.environ),
            rate=args.rate,
            seconds=args.seconds,
            during_campaign=args.during_campaign,
        )
    )
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
