"""Worker processes: shard topology on the real RabbitMQ, dead-lettering, maintenance jobs."""

from __future__ import annotations

import asyncio
import sys

import aio_pika
import asyncpg
import msgspec
import pytest

from crm import users
from dispatcher import topology, worker
from herald.cli.up import supervise
from herald.db import create_pool
from herald.settings import Settings


@pytest.fixture
async def channel(settings: Settings):
    connection = await aio_pika.connect_robust(settings.amqp_url)
    channel = await connection.channel()
    yield channel
    for shard in range(settings.shards):
        for name in topology.queue_names(settings, shard):
            await channel.queue_delete(name)
    await channel.queue_delete(f"{settings.namespace}.dispatch.dead")
    await connection.close()


def test_shards_are_split_between_processes() -> None:
    settings = Settings(shards=8)
    split = [topology.shards_of(settings, i, 3) for i in range(3)]
    assert sorted(s for part in split for s in part) == list(range(8))
    assert split[0] == [0, 3, 6]


async def test_unhandled_message_is_dead_lettered_not_lost(settings: Settings, channel) -> None:
    settings = msgspec.structs.replace(settings, shards=2)
    # Given the shard topology and a running worker
    await topology.declare_topology(channel, settings)
    stop = asyncio.Event()
    stopper = asyncio.create_task(worker.run_worker(settings, 0, 1, stop))
    realtime, _bulk = topology.queue_names(settings, 1)
    # When a message of a kind nobody handles arrives
    await channel.default_exchange.publish(
        aio_pika.Message(
            msgspec.json.encode({"kind": "no_such_kind"}),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key=realtime,
    )
    dead = await channel.declare_queue(f"{settings.namespace}.dispatch.dead", durable=True)
    message = None
    for _ in range(50):
        message = await dead.get(fail=False)
        if message is not None:
            break
        await asyncio.sleep(0.1)
    stop.set()
    await stopper
    # Then it is parked in the dead-letter queue, intact
    assert message is not None
    assert msgspec.json.decode(message.body) == {"kind": "no_such_kind"}
    await message.ack()


async def test_expired_sessions_are_purged(
    settings: Settings, demo_users, app_conn: asyncpg.Connection
) -> None:
    user_id = await app_conn.fetchval("SELECT min(id) FROM users")
    await app_conn.execute(
        "INSERT INTO sessions (token_hash, user_id, expires_at) VALUES "
        "('\\x01', $1, herald_now() - interval '1 hour'), ('\\x02', $1, herald_now() + interval '1 hour')",
        user_id,
    )
    pool = await create_pool(settings)
    try:
        assert await users.purge_expired_sessions(pool) == 1
    finally:
        await pool.close()
    assert await app_conn.fetchval("SELECT count(*) FROM sessions") == 1


def test_up_stops_everything_when_one_child_dies() -> None:
    # Given two children, one of which exits at once with an error
    commands = {
        "long": [sys.executable, "-c", "import time; time.sleep(60)"],
        "short": [sys.executable, "-c", "raise SystemExit(3)"],
    }
    # When supervised
    code = supervise(commands, grace_seconds=5)
    # Then the failing child's code is returned and the long one was stopped (no 60 s wait)
    assert code == 3
