"""Worker processes: consume the dispatch shards, run the send path, and the scheduler.

One uvloop process per core consumes its shards' bulk queues (campaign batches), and
one more process (``--realtime-processes``, default 1) consumes the realtime queues of
every shard. Campaign work is CPU-bound (rendering, encoding a thousand messages at a
time) and shares nothing with a trigger but the event loop, so a trigger handled in a
bulk process waits for that loop; in a process of its own it waits only for the OS.
The bulk processes also consume their shards' realtime queues, at a lower consumer
priority: RabbitMQ hands them realtime work only while no realtime process has room
for it (none running, or all their prefetch in hand), so nothing waits for a dead
realtime process. Each message is processed as its own task, bounded by the prefetch
count. SIGTERM/SIGINT stops consuming, lets the tasks in hand finish (their outcomes are
written before the ack), then exits. A message that cannot be decoded is dead-lettered,
never dropped.

The process entry of ``dispatcher``: it wires the send path (``dispatcher.send``), the
scheduler and the providers together, and nothing in ``dispatcher`` imports it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import signal
import time
from collections.abc import Coroutine
from typing import Literal

import aio_pika
import asyncpg
import msgspec
import redis.asyncio as aioredis
import uvloop
from aio_pika.abc import AbstractIncomingMessage
from redis import exceptions as redis_exceptions

from dispatcher.envelopes import Envelope, RealtimeMessages, decoder
from dispatcher.scheduler import Scheduler
from dispatcher.send import pipeline, realtime_batch
from dispatcher.send.pipeline import Context
from dispatcher.topology import declare_topology, queue_names, shards_of
from herald import clock
from herald.amqp import AmqpLink
from herald.db import create_pool
from herald.logs import configure_logging
from herald.settings import Settings
from providers.registry import build_providers, close_providers
from rules.rate_limit import RedisRateLimiter

log = logging.getLogger("herald.worker")

BULK_PREFETCH = 4
REALTIME_PREFETCH = 16
# Rounds of realtime work a process runs at once, and the most references one takes.
REALTIME_LANES = 2
MERGED_REFS = 1000
# How much lower the OS schedules bulk processes than realtime ones (nice(2) steps).
BULK_NICENESS = 10
# Consumer priorities on a realtime queue: the dedicated realtime process first.
REALTIME_PRIORITY = 10
FALLBACK_PRIORITY = 0

# all: bulk and realtime of its shards (a single process, tests); bulk: bulk of its
# shards and realtime of them as a fallback; realtime: the realtime queues of every shard.
Role = Literal["all", "bulk", "realtime"]


async def handle(ctx: Context, envelope: Envelope) -> None:
    """Process one queue message: a campaign batch, or a realtime (trigger, operator) message."""
    if isinstance(envelope, RealtimeMessages):
        await realtime_batch.handle(ctx, envelope)
        return
    await pipeline.handle_batch(ctx, envelope)


OUTAGE_RETRY_SECONDS = 2.0
"""How long a message whose handling met an unreachable service waits before it is requeued."""


def infrastructure_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a service being unreachable or restarting
    (Redis, PostgreSQL, RabbitMQ, the network), rather than something wrong with the work."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(
            current,
            (
                OSError,
                TimeoutError,
                redis_exceptions.ConnectionError,
                redis_exceptions.TimeoutError,
                redis_exceptions.BusyLoadingError,
                asyncpg.exceptions.PostgresConnectionError,
                asyncpg.exceptions.InterfaceError,
                asyncpg.exceptions.TooManyConnectionsError,
                asyncpg.exceptions.CannotConnectNowError,
                asyncpg.exceptions.AdminShutdownError,
                asyncpg.exceptions.CrashShutdownError,
                aio_pika.exceptions.AMQPConnectionError,
                aio_pika.exceptions.ChannelInvalidStateError,
            ),
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


class Consumer:
    """Runs the pipeline for each delivered message.

    A campaign batch is one task of its own. Realtime messages are merged: up to
    ``lanes`` rounds run at a time, and each round takes every realtime message that
    arrived meanwhile (up to ``MERGED_REFS`` references) as one unit of work, acked or
    requeued together once it committed or failed. Under load this bounds the database
    connections realtime work holds and pays the per-round reads once for many
    triggers, instead of every message queueing for the pool on its own.
    """

    def __init__(self, ctx: Context, lanes: int = REALTIME_LANES) -> None:
        self._ctx = ctx
        self._tasks: set[asyncio.Task[None]] = set()
        self._lanes = lanes
        self._lanes_running = 0
        self._waiting: collections.deque[tuple[AbstractIncomingMessage, RealtimeMessages]] = (
            collections.deque()
        )

    def _spawn(self, work: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        self._spawn(self._process(message))

    async def _process(self, message: AbstractIncomingMessage) -> None:
        try:
            envelope = decoder.decode(message.body)
        except msgspec.DecodeError as exc:
            log.error("undecodable message on %s dead-lettered: %s", message.routing_key, exc)
            await message.reject(requeue=False)
            return
        if isinstance(envelope, RealtimeMessages):
            self._waiting.append((message, envelope))
            if self._lanes_running < self._lanes:
                self._lanes_running += 1
                self._spawn(self._lane())
            return
        await self._run(envelope, [message])

    async def _lane(self) -> None:
        try:
            while self._waiting:
                taken: list[tuple[AbstractIncomingMessage, RealtimeMessages]] = []
                refs: list[tuple[int, int]] = []
                while self._waiting and (
                    not refs or len(refs) + len(self._waiting[0][1].refs) <= MERGED_REFS
                ):
                    taken.append(self._waiting.popleft())
                    refs.extend(taken[-1][1].refs)
                merged = RealtimeMessages(refs)
                if len(taken) == 1:
                    await self._run(taken[0][1], [taken[0][0]])
                elif await self._attempt(merged) == "done":
                    await self._settle([m for m, _ in taken], merged, done=True)
                else:
                    # One bad message must not take the others down with it: each on its
                    # own (what the merged round committed is skipped, its rows being done).
                    for message, envelope in taken:
                        await self._run(envelope, [message])
        finally:
            self._lanes_running -= 1

    async def _attempt(self, envelope: Envelope) -> Literal["done", "failed", "outage"]:
        try:
            # Shielded: a shutdown must not cancel a batch between its provider call and
            # the write of its outcomes.
            await asyncio.shield(handle(self._ctx, envelope))
        except Exception as exc:
            if infrastructure_failure(exc):
                # Redis, PostgreSQL or the broker away for a moment: not the message's fault.
                log.warning("handling %s failed, a service is unreachable: %r", envelope, exc)
                return "outage"
            log.exception("handling failed: %s", envelope)
            return "failed"
        return "done"

    async def _run(self, envelope: Envelope, messages: list[AbstractIncomingMessage]) -> None:
        result = await self._attempt(envelope)
        if result == "outage":
            # Held (prefetch bounds how many) while the service comes back, then requeued:
            # an outage neither spins through the queue nor dead-letters sound work.
            await asyncio.sleep(OUTAGE_RETRY_SECONDS)
        await self._settle(messages, envelope, done=result == "done", outage=result == "outage")

    async def _settle(
        self,
        messages: list[AbstractIncomingMessage],
        envelope: Envelope,
        *,
        done: bool,
        outage: bool = False,
    ) -> None:
        """Ack what was handled; requeue what failed once, dead-letter what failed twice;
        what failed because a service was unreachable is requeued however often."""
        for message in messages:
            if not done:
                # Work already committed is skipped when it comes back (rows done, ids final).
                if message.redelivered and not outage:
                    log.error("message failed twice; dead-lettered: %s", envelope)
                    await message.reject(requeue=False)
                else:
                    log.error("message failed; requeued once: %s", envelope)
                    await message.nack(requeue=True)
                continue
            try:
                await message.ack()
            except (aio_pika.exceptions.AMQPError, RuntimeError) as exc:
                # The connection dropped after the work was committed: the broker hands
                # the message out again and the batch, already done, is skipped.
                log.warning(
                    "could not ack %s (%s); it will be redelivered and skipped", envelope, exc
                )

    async def drain(self) -> None:
        while self._tasks:  # a message task may start a round while we wait
            await asyncio.wait(set(self._tasks))


async def run_worker(
    settings: Settings,
    index: int,
    processes: int,
    stop: asyncio.Event | None = None,
    role: Role = "all",
) -> None:
    """One worker process: consume its shards (and maybe lead the scheduler) until stopped.

    A realtime process never runs the scheduler: its duties (receipt expiry, releases,
    segment refreshes) would take the loop from the triggers it is there for."""
    if stop is None:  # a process of its own: signals stop it
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    pool = await create_pool(settings)
    redis = aioredis.Redis.from_url(settings.redis_url)
    providers = build_providers(settings)
    amqp = AmqpLink(settings, on_connect=lambda channel: declare_topology(channel, settings))
    amqp.start()
    await amqp.wait_connected(timeout=30)
    consumer = Consumer(Context(settings, pool, redis, providers, RedisRateLimiter(redis)))
    scheduler = asyncio.create_task(
        Scheduler(settings, pool, redis, amqp).run(stop) if role != "realtime" else stop.wait()
    )
    try:
        connection = amqp.connection
        bulk = await connection.channel()
        await bulk.set_qos(prefetch_count=BULK_PREFETCH)
        realtime = await connection.channel()
        await realtime.set_qos(prefetch_count=REALTIME_PREFETCH)
        mine = (
            list(range(settings.shards))
            if role == "realtime"
            else shards_of(settings, index, processes)
        )
        priority = FALLBACK_PRIORITY if role == "bulk" else REALTIME_PRIORITY
        for shard in mine:
            realtime_name, bulk_name = queue_names(settings, shard)
            await (await realtime.get_queue(realtime_name)).consume(
                consumer.on_message, arguments={"x-priority": priority}
            )
            if role != "realtime":
                await (await bulk.get_queue(bulk_name)).consume(consumer.on_message)
        log.info("%s worker %d/%d consuming shards %s", role, index + 1, processes, mine)
        await stop.wait()
        log.info(
            "worker %d stopping: finishing %d messages in hand", index + 1, len(consumer._tasks)
        )
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


def _process_main(settings: Settings, index: int, processes: int, role: Role) -> None:
    clock.configure(settings)  # a spawned process starts with the module's defaults
    if role == "bulk":
        # On a busy host the scheduler then runs the realtime process and the API first
        # whenever they have work; campaign throughput only loses what they use.
        os.nice(BULK_NICENESS)
    configure_logging(
        settings, f"worker-{index + 1}" if role != "realtime" else f"realtime-{index + 1}"
    )
    uvloop.run(run_worker(settings, index, processes, role=role))


RESPAWN_BACKOFF_MAX = 30.0
"""Seconds at most between restarts of a worker process that keeps dying at once."""


def run_workers(settings: Settings, processes: int, realtime_processes: int = 1) -> int:
    """Start ``processes`` bulk and ``realtime_processes`` realtime worker processes and keep
    them running until SIGTERM/SIGINT: a process that dies (``kill -9``, out of memory, a
    crash) is started again with the same index, so its shards are consumed again within
    seconds (its unacknowledged messages went back to the queue when its connection
    closed; a batch already committed is skipped when it comes back). One that keeps dying
    at once is restarted after a growing pause (up to ``RESPAWN_BACKOFF_MAX`` s). Exit code
    non-zero if one failed at the end. With no realtime process the bulk ones take realtime
    work at full priority, as a single process does."""
    ctx = multiprocessing.get_context("spawn")
    bulk_role: Role = "bulk" if realtime_processes else "all"
    plan: list[tuple[int, int, Role, str]] = [
        (i, processes, bulk_role, f"herald-worker-{i + 1}") for i in range(processes)
    ]
    plan += [
        (i, realtime_processes, "realtime", f"herald-realtime-{i + 1}")
        for i in range(realtime_processes)
    ]

    def start(slot: int) -> multiprocessing.process.BaseProcess:
        index, count, role, name = plan[slot]
        proc = ctx.Process(target=_process_main, args=(settings, index, count, role), name=name)
        proc.start()
        return proc

    procs = [start(slot) for slot in range(len(plan))]
    started = [time.monotonic()] * len(plan)
    failures = [0] * len(plan)
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.is_alive() and proc.pid:
                os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while not stopping:
        multiprocessing.connection.wait([p.sentinel for p in procs], timeout=1.0)
        for slot, proc in enumerate(procs):
            if stopping or proc.is_alive():
                continue
            # A process that lived a minute had a fault, not a broken start: no pause.
            failures[slot] = 0 if time.monotonic() - started[slot] > 60 else failures[slot] + 1
            pause = min(RESPAWN_BACKOFF_MAX, 0.5 * 2 ** failures[slot]) if failures[slot] else 0
            log.error(
                "%s exited with %s; starting it again%s",
                proc.name,
                proc.exitcode,
                f" in {pause:.0f} s" if pause else "",
            )
            time.sleep(pause)
            if not stopping:
                procs[slot] = start(slot)
                started[slot] = time.monotonic()
    for proc in procs:
        proc.join()
    return max((p.exitcode or 0) for p in procs)
