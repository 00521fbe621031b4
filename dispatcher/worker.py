"""Worker processes: consume the dispatch shards and run periodic maintenance.

Foundation scope: the process model (one uvloop process per core, graceful drain on
SIGTERM/SIGINT), the durable shard topology and the maintenance jobs. Message handlers
are registered in ``HANDLERS`` by the messaging engine; until one is registered for a
message kind, such messages are dead-lettered (kept, never dropped) and logged.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
from collections.abc import Awaitable, Callable

import aio_pika
import asyncpg
import msgspec
from aio_pika.abc import AbstractIncomingMessage
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from herald.db import create_pool
from herald.logs import configure_logging
from herald.settings import Settings

log = logging.getLogger("herald.worker")

Handler = Callable[[bytes], Awaitable[None]]
HANDLERS: dict[str, Handler] = {}


class Envelope(msgspec.Struct, frozen=True):
    """What every dispatch message carries besides its payload: the kind says who handles it."""

    kind: str


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


async def _handle(message: AbstractIncomingMessage) -> None:
    try:
        envelope = msgspec.json.decode(message.body, type=Envelope)
    except msgspec.DecodeError:
        log.error("undecodable message on %s dead-lettered", message.routing_key)
        await message.reject(requeue=False)
        return
    handler = HANDLERS.get(envelope.kind)
    if handler is None:
        log.error("no handler for message kind %r; dead-lettered", envelope.kind)
        await message.reject(requeue=False)
        return
    async with message.process(requeue=True):
        await handler(message.body)


async def run_worker(settings: Settings, index: int, processes: int) -> None:
    """One worker process: consume its shards until SIGTERM/SIGINT, then drain and stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    pool = await create_pool(settings)
    connection = await aio_pika.connect_robust(settings.amqp_url)
    scheduler = AsyncIOScheduler()
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=8)
        await declare_topology(channel, settings)
        mine = shards_of(settings, index, processes)
        for shard in mine:
            for name in queue_names(settings, shard):
                queue = await channel.get_queue(name)
                await queue.consume(_handle)
        if index == 0:
            scheduler.add_job(purge_expired_sessions, "interval", minutes=10, args=[pool],
                              id="purge-expired-sessions")
            scheduler.start()
        log.info("worker %d/%d consuming shards %s", index + 1, processes, mine)
        await stop.wait()
        log.info("worker %d stopping", index + 1)
    finally:
        if scheduler.running:
            scheduler.shutdown(wait=False)
        await connection.close()
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
