"""Worker processes: consume the dispatch shards, run the pipeline, and the scheduler.

One uvloop process per core. Each consumes its shards' realtime and bulk queues on
separate channels, so realtime work is never queued behind a campaign's batches; each
message is processed as its own task, bounded by the prefetch count. SIGTERM/SIGINT
stops consuming, lets the tasks in hand finish (their outcomes are written before the
ack), then exits. A message that cannot be decoded is dead-lettered, never dropped.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal

import aio_pika
import asyncpg
import msgspec
import redis.asyncio as aioredis
from aio_pika.abc import AbstractIncomingMessage

from herald.amqp import AmqpLink
from herald.db import create_pool
from herald.logs import configure_logging
from herald.settings import Settings

log = logging.getLogger("herald.worker")

BULK_PREFETCH = 4
REALTIME_PREFETCH = 16


def queue_names(settings: Settings, shard: int) -> tuple[str, str]:
    """(realtime, bulk) queue names of a shard."""
    base = f"{settings.namespace}.dispatch.{shard}"
    return f"{base}.realtime", f"{base}.bulk"


def shards_of(settings: Settings, index: int, processes: int) -> list[int]:
    """The shards process ``index`` of ``processes`` consumes on this host."""
    return [s for s in range(settings.shards) if s % processes == index]


async def declare_topology(channel: aio_pika.abc.AbstractChannel, settings: Settings) -> None:
    """Durable queues of every shard, all dead-lettering into one parking queue."""
    dead = f"{settings.namespace}.dispatch.dead"
    await channel.declare_queue(dead, durable=True)
    for shard in range(settings.shards):
        for name in queue_names(settings, shard):
            await channel.declare_queue(name, durable=True, arguments={
                "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead})


async def purge_expired_sessions(pool: asyncpg.Pool) -> int:
    """Delete sessions past their expiry; returns how many."""
    result = await pool.execute("DELETE FROM sessions WHERE expires_at < now()")
    return int(result.split()[-1])


class Consumer:
    """Runs the pipeline for each delivered message, one task per message."""

    def __init__(self, ctx: object) -> None:
        from dispatcher import pipeline

        self._pipeline = pipeline
        self._ctx = ctx
        self._tasks: set[asyncio.Task[None]] = set()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.create_task(self._process(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        from dispatcher.envelopes import decoder

        try:
            envelope = decoder.decode(message.body)
        except msgspec.DecodeError as exc:
            log.error("undecodable message on %s dead-lettered: %s", message.routing_key, exc)
            await message.reject(requeue=False)
            return
        try:
            # Shielded: a shutdown must not cancel a batch between its provider call and
            # the write of its outcomes.
            await asyncio.shield(self._pipeline.handle(self._ctx, envelope))
        except Exception:
            if message.redelivered:
                log.exception("message failed twice; dead-lettered: %s", envelope)
                await message.reject(requeue=False)
            else:
                log.exception("message failed; requeued once: %s", envelope)
                await message.nack(requeue=True)
            return
        try:
            await message.ack()
        except (aio_pika.exceptions.AMQPError, RuntimeError) as exc:
            # The connection dropped after the work was committed: the broker hands the
            # message out again and the batch, already done, is skipped.
            log.warning("could not ack %s (%s); it will be redelivered and skipped", envelope, exc)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks))


async def run_worker(settings: Settings, index: int, processes: int,
                     stop: asyncio.Event | None = None) -> None:
    """One worker process: consume its shards (and maybe lead the scheduler) until stopped."""
    from dispatcher.pipeline import Context
    from dispatcher.scheduler import Scheduler
    from providers.registry import build_providers, close_providers
    from rules.rate_limit import RedisRateLimiter

    if stop is None:  # a process of its own: signals stop it
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    pool = await create_pool(settings)
    redis = aioredis.Redis.from_url(settings.redis_url)
    providers = build_providers(settings)
    amqp = AmqpLink(settings)
    amqp.start()
    await amqp.wait_connected(timeout=30)
    consumer = Consumer(Context(settings, pool, redis, providers, RedisRateLimiter(redis)))
    scheduler = asyncio.create_task(Scheduler(settings, pool, redis, amqp).run(stop))
    try:
        connection = amqp.connection
        bulk = await connection.channel()
        await bulk.set_qos(prefetch_count=BULK_PREFETCH)
        realtime = await connection.channel()
        await realtime.set_qos(prefetch_count=REALTIME_PREFETCH)
        await declare_topology(bulk, settings)
        mine = shards_of(settings, index, processes)
        for shard in mine:
            realtime_name, bulk_name = queue_names(settings, shard)
            await (await realtime.get_queue(realtime_name)).consume(consumer.on_message)
            await (await bulk.get_queue(bulk_name)).consume(consumer.on_message)
        log.info("worker %d/%d consuming shards %s", index + 1, processes, mine)
        await stop.wait()
        log.info("worker %d stopping: finishing %d messages in hand", index + 1,
                 len(consumer._tasks))
        await bulk.close()
        await realtime.close()
        await consumer.drain()
    finally:
        stop.set()
        await asyncio.gather(scheduler, return_exceptions=True)
        await amqp.close()
        await close_providers(providers)
        await redis.aclose()
        await pool.close()


def _process_main(settings: Settings, index: int, processes: int) -> None:
    import uvloop

    configure_logging(settings, f"worker-{index + 1}")
    uvloop.run(run_worker(settings, index, processes))


def run_workers(settings: Settings, processes: int) -> int:
    """Start ``processes`` worker processes and wait for all; exit code non-zero if one failed."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_process_main, args=(settings, i, processes),
                         name=f"herald-worker-{i + 1}") for i in range(processes)]
    for proc in procs:
        proc.start()

    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.is_alive() and proc.pid:
                os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for proc in procs:
        proc.join()
    return max((p.exitcode or 0) for p in procs)
