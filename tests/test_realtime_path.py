"""The realtime path around the pipeline: queues declared by the API, worker roles, and
realtime messages that arrive together handled as one unit of work."""

from __future__ import annotations

import asyncio

import aio_pika
import msgspec
import redis.asyncio as aioredis
from conftest import login_as
from dispatch_helpers import TEMPLATE, Stack, make_clients
from test_triggers import event, post, producer, rule, status_is

from dispatcher import topology, worker
from dispatcher.envelopes import RealtimeMessages
from dispatcher.send.pipeline import Context
from herald.db import create_pool
from herald.settings import Settings
from providers.registry import build_providers, close_providers
from rules.rate_limit import RedisRateLimiter


async def realtime_backlog(settings: Settings) -> list[int]:
    """Messages waiting in each shard's realtime queue (the queues must exist)."""
    connection = await aio_pika.connect_robust(settings.amqp_url)
    try:
        async with connection.channel() as channel:
            counts: list[int] = []
            for shard in range(settings.shards):
                queue = await channel.declare_queue(
                    topology.queue_names(settings, shard)[0], passive=True
                )
                counts.append(queue.declaration_result.message_count or 0)
            return counts
    finally:
        await connection.close()


async def delete_queues(settings: Settings) -> None:
    connection = await aio_pika.connect_robust(settings.amqp_url)
    try:
        async with connection.channel() as channel:
            for shard in range(settings.shards):
                for name in topology.queue_names(settings, shard):
                    await channel.queue_delete(name)
            await channel.queue_delete(f"{settings.namespace}.dispatch.dead")
    finally:
        await connection.close()


async def test_api_declares_the_queues_so_a_trigger_waits_for_no_worker(
    settings: Settings, demo_users, aiohttp_client, admin_conn
) -> None:
    from admin_api.app import init_app

    # Given only the admin API: no worker has ever declared this namespace's queues
    api = await aiohttp_client(init_app(settings))
    try:
        admin = await login_as(api, "admin")
        ids = await make_clients(admin_conn, 1)
        response = await api.post("/api/v1/templates", json=TEMPLATE, headers=admin)
        template = (await response.json())["template"]["id"]
        response = await api.post(
            "/api/v1/producers",
            headers=admin,
            json={"name": "Білінг", "event_types": ["payment.received"]},
        )
        key = {"Authorization": f"Bearer {(await response.json())['api_key']}"}
        response = await api.post(
            "/api/v1/trigger-rules",
            headers=admin,
            json={
                "name": "Дякуємо",
                "event_type": "payment.received",
                "template_id": template,
                "channel_chain": ["sms"],
            },
        )
        assert response.status == 201, await response.text()
        # When a producer posts an event
        response = await api.post(
            "/api/v1/events", headers=key, json={"events": [event("pay-1", ids[0])]}
        )
        assert response.status == 200, await response.text()
        # Then its reference is already on a realtime queue, not dropped for the sweep
        assert sum(await realtime_backlog(settings)) == 1
        assert (
            await admin_conn.fetchval(
                "SELECT published_at IS NOT NULL AND NOT done FROM realtime_messages"
            )
            is True
        )
    finally:
        await delete_queues(settings)


async def test_messages_that_arrive_together_are_one_unit_of_work(stack: Stack) -> None:
    ids = await make_clients(stack.conn, 3)
    _, key = await producer(stack)
    await rule(stack)
    # Given three events posted one by one while no worker runs (three queue messages)
    await stack.stop_worker()
    posted = [await post(stack, key, [event(f"pay-{i}", client)]) for i, client in enumerate(ids)]
    mids = [p["results"][0]["messages"][0] for p in posted]
    settings = stack.settings
    assert sum(await realtime_backlog(settings)) == 3
    # When a worker's consumer is handed all three at once
    pool = await create_pool(settings)
    redis = aioredis.Redis.from_url(settings.redis_url)
    providers = build_providers(settings)
    connection = await aio_pika.connect_robust(settings.amqp_url)
    try:
        consumer = worker.Consumer(
            Context(settings, pool, redis, providers, RedisRateLimiter(redis))
        )
        channel = await connection.channel()
        deliveries = []
        for shard in range(settings.shards):
            queue = await channel.get_queue(topology.queue_names(settings, shard)[0])
            while (message := await queue.get(fail=False)) is not None:
                deliveries.append(message)
        assert sorted(
            len(msgspec.json.decode(m.body, type=RealtimeMessages).refs) for m in deliveries
        ) == [1, 1, 1]
        for message in deliveries:
            await consumer.on_message(message)
        await consumer.drain()
        # Then they went to the provider in one request, each once, and were all acked
        for mid in mids:
            await status_is(stack, mid, "delivered", "read")
        sms = await stack.sim_stats("sms")
        assert (sms["requests"], sms["accepted"], sms["duplicates"]) == (1, 3, 0)
        await channel.close()
        assert sum(await realtime_backlog(settings)) == 0
        assert (
            await stack.conn.fetchval("SELECT count(*) FILTER (WHERE done) FROM realtime_messages")
            == 3
        )
    finally:
        await connection.close()
        await close_providers(providers)
        await redis.aclose()
        await pool.close()


async def run_role(stack: Stack, role: worker.Role) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    return stop, asyncio.create_task(worker.run_worker(stack.settings, 0, 1, stop, role=role))


async def test_bulk_workers_take_realtime_work_when_no_realtime_process_runs(stack: Stack) -> None:
    ids = await make_clients(stack.conn, 1)
    _, key = await producer(stack)
    await rule(stack)
    await stack.stop_worker()
    # Given only a bulk worker (the realtime process is down)
    stop, task = await run_role(stack, "bulk")
    try:
        # Then a trigger is still handed off, as the fallback consumer of its queue
        result = await post(stack, key, [event("pay-1", ids[0])])
        await status_is(stack, result["results"][0]["messages"][0], "delivered", "read")
    finally:
        stop.set()
        await task


async def test_realtime_process_takes_no_campaign_batch(stack: Stack) -> None:
    ids = await make_clients(stack.conn, 2)
    _, key = await producer(stack)
    await rule(stack)
    await stack.stop_worker()
    # Given a campaign launched while only a realtime worker runs
    stop, task = await run_role(stack, "realtime")
    try:
        campaign = await stack.campaign(ids[:1])
        await stack.launch(campaign)
        # When a trigger comes in, it is handed off
        result = await post(stack, key, [event("pay-1", ids[1])])
        await status_is(stack, result["results"][0]["messages"][0], "delivered", "read")
        # Then the campaign's batch is left for the bulk workers
        assert (
            await stack.conn.fetchval(
                "SELECT count(*) FROM campaign_batches WHERE campaign_id = $1 AND done", campaign
            )
            == 0
        )
    finally:
        stop.set()
        await task
    # and a bulk worker sends it
    stack.start_worker()
    await stack.wait(lambda s: s["status"] == "completed", campaign)
    assert (await stack.sim_stats("sms"))["accepted"] == 2


async def test_one_bad_message_does_not_take_its_merged_neighbours_down(stack: Stack) -> None:
    ids = await make_clients(stack.conn, 3)
    _, key = await producer(stack)
    await rule(stack)
    broken = await stack.template(name="Зламаний")
    await rule(stack, template_id=broken, event_type="debt.created")
    # Given a stored version that no longer decodes (what a bad migration could leave)
    await stack.conn.execute(
        "UPDATE message_template_versions SET variants = "
        '\'{"sms": {"no_such_field": 1}}\' WHERE template_id = $1',
        broken,
    )
    await stack.stop_worker()
    good = [await post(stack, key, [event(f"pay-{i}", c)]) for i, c in enumerate(ids[:2])]
    bad = await post(stack, key, [event("debt-1", ids[2], type="debt.created")])
    settings = stack.settings
    pool = await create_pool(settings)
    redis = aioredis.Redis.from_url(settings.redis_url)
    providers = build_providers(settings)
    connection = await aio_pika.connect_robust(settings.amqp_url)
    try:
        consumer = worker.Consumer(
            Context(settings, pool, redis, providers, RedisRateLimiter(redis))
        )
        channel = await connection.channel()
        deliveries = []
        for shard in range(settings.shards):
            queue = await channel.get_queue(topology.queue_names(settings, shard)[0])
            while (message := await queue.get(fail=False)) is not None:
                deliveries.append(message)
        assert len(deliveries) == 3
        # When the three are handed over together and the merged round fails
        for message in deliveries:
            await consumer.on_message(message)
        await consumer.drain()
        # Then the two good ones still went out, and only the bad one is back on its queue
        for result in good:
            await status_is(stack, result["results"][0]["messages"][0], "delivered", "read")
        await channel.close()
        assert sum(await realtime_backlog(settings)) == 1
        pending = await stack.conn.fetch("SELECT event_id FROM realtime_messages WHERE NOT done")
        assert [r["event_id"] for r in pending] == [bad["results"][0]["event_id"]]
    finally:
        await connection.close()
        await close_providers(providers)
        await redis.aclose()
        await pool.close()
