"""Re-measures the raw primitives the design rests on (ARCHITECTURE.md, "The hot path").

Each ``measure_*`` function times one primitive against the local services and returns a
:class:`Measurement`. Every measurement stops at whichever comes first, its time budget
or its count limit, and removes what it created (queue, Redis keys, temp table, server)
even when it fails. :func:`run_primitives` runs the selected steps one after another and
reports progress; ``herald bench primitives`` (herald/cli/bench/__init__.py) is its command.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import platform
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

import aio_pika
import aiohttp
import asyncpg
import msgspec
import redis.asyncio as aioredis
from aiohttp import web

from herald.settings import Settings, env_name, redact_url

GROUPS: tuple[str, ...] = ("rabbitmq", "postgresql", "redis", "http")


class Measurement(msgspec.Struct, frozen=True, kw_only=True):
    """One timed primitive: how many units it did in how long."""

    step: str
    """Stable name, e.g. ``rabbitmq.publish.batch``."""
    description: str
    unit: str
    """What ``count`` and ``rate`` count, e.g. ``recipients``."""
    count: int
    operations: int
    """Round trips or calls behind ``count`` (messages, statements, pipelines, requests)."""
    seconds: float
    reference: str = ""
    """The figure ARCHITECTURE.md quotes for this primitive, for comparison."""
    error: str | None = None

    @property
    def rate(self) -> float:
        """Units per second (0 when the step failed or did nothing)."""
        return self.count / self.seconds if self.seconds > 0 else 0.0

    @property
    def micros_per_operation(self) -> float:
        return self.seconds * 1e6 / self.operations if self.operations else 0.0


class Bounds(msgspec.Struct, frozen=True, kw_only=True):
    """How long and how far each step may go; the count limits keep disk and memory bounded."""

    seconds: float = 3.0
    batch_size: int = 1000
    """Recipients per message in the batched publish."""
    publish_in_flight: int = 256
    """Publishes awaiting their confirm at once (messages of one recipient)."""
    batch_in_flight: int = 16
    """Publishes awaiting their confirm at once (batches)."""
    http_concurrency: int = 16
    max_messages: int = 200_000
    max_batches: int = 15_000
    max_copy_rows: int = 5_000_000
    max_insert_rows: int = 200_000
    max_lua_calls: int = 500_000
    max_pipelined: int = 5_000_000
    max_http_requests: int = 500_000


class PrimitivesReport(msgspec.Struct, frozen=True, kw_only=True):
    """All steps of one run, with the conditions they ran under."""

    host: str
    cpus: int
    started_at: dt.datetime
    load_average_before: float
    load_average_after: float
    bounds: Bounds
    measurements: list[Measurement]


class NotLocalError(ValueError):
    """A service URL points away from this machine; the benchmark only loads localhost."""


class _Budget:
    """The time left to a step."""

    def __init__(self, seconds: float) -> None:
        self.started = time.perf_counter()
        self._deadline = self.started + seconds

    def left(self) -> bool:
        return time.perf_counter() < self._deadline

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


# --- safety -------------------------------------------------------------------------------


def _is_local_host(host: str | None) -> bool:
    if not host:  # no host: a Unix socket
        return True
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ensure_local(settings: Settings) -> None:
    """Refuse to load anything but services on this machine (raises NotLocalError)."""
    for field in ("database_url", "amqp_url", "redis_url"):
        url = getattr(settings, field)
        host = urlsplit(url).hostname
        if not _is_local_host(host):
            raise NotLocalError(
                f"{env_name(field)} points at {redact_url(url)}; "
                "the primitives benchmark only runs against localhost services"
            )


def bench_queue_name(settings: Settings) -> str:
    """A fresh name for a temporary benchmark queue, under the settings' namespace."""
    return f"{settings.namespace}.bench.primitives.{secrets.token_hex(4)}"


# --- RabbitMQ -----------------------------------------------------------------------------


class _Envelope(msgspec.Struct, array_like=True):
    """Roughly what a dispatch message will carry: a batch of (client id, address)."""

    campaign_id: int
    recipients: list[tuple[int, str]]


def recipient_batch(size: int) -> bytes:
    """A message body carrying ``size`` recipients."""
    return msgspec.msgpack.encode(
        _Envelope(
            campaign_id=1, recipients=[(1_000_000 + i, f"+38067{i:07d}") for i in range(size)]
        )
    )


async def measure_amqp_publish(
    settings: Settings,
    *,
    batch_size: int,
    seconds: float,
    max_messages: int,
    in_flight: int,
    queue_name: str | None = None,
) -> Measurement:
    """Persistent publishes with publisher confirms into a temporary durable queue.

    ``in_flight`` publishes await their confirms at once, as a publishing worker would
    keep a window open. The queue is deleted afterwards, messages and all.
    """
    body = recipient_batch(batch_size)
    name = queue_name or bench_queue_name(settings)
    connection = await aio_pika.connect(settings.amqp_url, timeout=10)
    try:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(name, durable=True)
        try:
            exchange = channel.default_exchange

            async def publish() -> None:
                await exchange.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=name,
                )

            await publish()  # warm-up: first publish on a new channel and queue
            sent = 0
            budget = _Budget(seconds)
            while sent < max_messages and budget.left():
                window = min(in_flight, max_messages - sent)
                await asyncio.gather(*(publish() for _ in range(window)))
                sent += window
            elapsed = budget.elapsed()
        finally:
            await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()
    single = batch_size == 1
    return Measurement(
        step="rabbitmq.publish.single" if single else "rabbitmq.publish.batch",
        description=(
            "persistent confirmed publish, 1 recipient/message"
            if single
            else f"persistent confirmed publish, {batch_size} recipients/message"
        ),
        unit="recipients",
        count=sent * batch_size,
        operations=sent,
        seconds=elapsed,
        reference="~6,500/s" if single else "millions/s",
    )


# --- PostgreSQL ---------------------------------------------------------------------------

_CREATE_TEMP = """
CREATE TEMP TABLE bench_outcome (
    message_id bigint NOT NULL,
    client_id  bigint NOT NULL,
    channel    text NOT NULL,
    status     smallint NOT NULL,
    sent_at    timestamptz NOT NULL
)"""
_INSERT_ONE = (
    "INSERT INTO bench_outcome (message_id, client_id, channel, status, sent_at) "
    "VALUES ($1, $2, $3, $4, $5)"
)
_Row = tuple[int, int, str, int, dt.datetime]


def outcome_rows(count: int) -> list[_Row]:
    """Rows shaped like send outcomes."""
    now = dt.datetime.now(dt.UTC)
    return [(i, 1_000_000 + i % 50_000, "sms", 1, now) for i in range(count)]


async def _bench_connection(settings: Settings) -> asyncpg.Connection:
    # The application role: TEMP tables need no more privilege than it has.
    conn = await asyncpg.connect(
        settings.database_url,
        timeout=10,
        server_settings={"application_name": "herald-bench", "statement_timeout": "60000"},
    )
    await conn.execute(_CREATE_TEMP)
    return conn


async def measure_pg_copy(
    settings: Settings, *, seconds: float, max_rows: int, rows_per_copy: int = 50_000
) -> Measurement:
    """``copy_records_to_table`` into a TEMP table, ``rows_per_copy`` rows per COPY.

    Rows have the five columns of a send outcome (bigint, bigint, text, smallint,
    timestamptz); narrower rows copy faster (two bigints: about twice as fast).
    """
    rows = outcome_rows(min(rows_per_copy, max_rows))
    conn = await _bench_connection(settings)
    try:
        await conn.copy_records_to_table("bench_outcome", records=rows[:100])  # warm-up
        done = copies = 0
        budget = _Budget(seconds)
        while done < max_rows and budget.left():
            chunk = rows if max_rows - done >= len(rows) else rows[: max_rows - done]
            await conn.copy_records_to_table("bench_outcome", records=chunk)
            done += len(chunk)
            copies += 1
        elapsed = budget.elapsed()
        await conn.execute("DROP TABLE bench_outcome")
    finally:
        await conn.close()
    return Measurement(
        step="postgresql.copy",
        description=f"COPY into a TEMP table, 5 columns, {len(rows)} rows per COPY",
        unit="rows",
        count=done,
        operations=copies,
        seconds=elapsed,
        reference="~1.4 M/s",
    )


async def measure_pg_insert(settings: Settings, *, seconds: float, max_rows: int) -> Measurement:
    """One INSERT statement (one round trip, autocommit) per row into a TEMP table."""
    rows = outcome_rows(min(max_rows, 10_000))
    conn = await _bench_connection(settings)
    try:
        await conn.execute(_INSERT_ONE, *rows[0])  # warm-up: prepares the statement
        done = 0
        budget = _Budget(seconds)
        while done < max_rows and budget.left():
            await conn.execute(_INSERT_ONE, *rows[done % len(rows)])
            done += 1
        elapsed = budget.elapsed()
        await conn.execute("DROP TABLE bench_outcome")
    finally:
        await conn.close()
    return Measurement(
        step="postgresql.insert",
        description="row-by-row INSERT into a TEMP table",
        unit="rows",
        count=done,
        operations=done,
        seconds=elapsed,
        reference="~100x slower than COPY",
    )


# --- Redis --------------------------------------------------------------------------------

# A counter that expires: about the size of a token-bucket or counter script.
_LUA_COUNTER = """
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if v == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return v
"""


def _redis_key(settings: Settings, what: str) -> str:
    return f"{settings.namespace}:bench:primitives:{secrets.token_hex(4)}:{what}"


async def measure_redis_lua(settings: Settings, *, seconds: float, max_calls: int) -> Measurement:
    """Sequential EVALSHA calls of a small script: the cost of one Lua round trip."""
    client = aioredis.from_url(settings.redis_url)
    key = _redis_key(settings, "lua")
    try:
        script = client.register_script(_LUA_COUNTER)
        await script(keys=[key], args=[1, 60_000])  # warm-up: loads the script
        calls = 0
        budget = _Budget(seconds)
        while calls < max_calls and budget.left():
            await script(keys=[key], args=[1, 60_000])
            calls += 1
        elapsed = budget.elapsed()
    finally:
        try:
            await client.delete(key)
        finally:
            await client.aclose()
    return Measurement(
        step="redis.lua",
        description="small Lua script (EVALSHA), one at a time",
        unit="calls",
        count=calls,
        operations=calls,
        seconds=elapsed,
        reference="~12,700/s (~80 µs)",
    )


async def measure_redis_pipeline(
    settings: Settings, *, seconds: float, max_commands: int, pipeline_size: int = 1000
) -> Measurement:
    """INCRBY commands sent ``pipeline_size`` at a time in a non-transactional pipeline."""
    client = aioredis.from_url(settings.redis_url)
    key = _redis_key(settings, "pipeline")
    try:
        await client.incrby(key, 1)  # warm-up: opens the connection
        await client.expire(key, 60)
        commands = pipelines = 0
        budget = _Budget(seconds)
        while commands < max_commands and budget.left():
            size = min(pipeline_size, max_commands - commands)
            pipe = client.pipeline(transaction=False)
            for _ in range(size):
                pipe.incrby(key, 1)  # type: ignore[unused-awaitable]  # queued, run by execute()
            await pipe.execute()
            commands += size
            pipelines += 1
        elapsed = budget.elapsed()
    finally:
        try:
            await client.delete(key)
        finally:
            await client.aclose()
    return Measurement(
        step="redis.pipeline",
        description=f"pipelined INCRBY, {pipeline_size} per pipeline",
        unit="commands",
        count=commands,
        operations=pipelines,
        seconds=elapsed,
    )


# --- HTTP ---------------------------------------------------------------------------------


async def _ok(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def measure_http_loopback(
    *, seconds: float, max_requests: int, concurrency: int
) -> Measurement:
    """GETs over keep-alive connections to a tiny aiohttp server in this same process.

    Client and server share one event loop, so this is what one core does when it is
    both ends of the conversation.
    """
    app = web.Application()
    app.router.add_get("/ping", _ok)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))  # any free port
        await web.SockSite(runner, sock).start()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/ping"
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def get() -> None:
                async with session.get(url) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"loopback server answered {response.status}")

            await asyncio.gather(*(get() for _ in range(concurrency)))  # warm-up: connect
            done = 0
            budget = _Budget(seconds)

            async def client() -> None:
                nonlocal done
                while done < max_requests and budget.left():
                    done += 1
                    await get()

            await asyncio.gather(*(client() for _ in range(concurrency)))
            elapsed = budget.elapsed()
    finally:
        await runner.cleanup()
        sock.close()
    return Measurement(
        step="http.loopback",
        description=f"aiohttp GET, keep-alive, {concurrency} connections, "
        "client and server in one process",
        unit="requests",
        count=done,
        operations=done,
        seconds=elapsed,
        reference="~5,400/s per core",
    )


# --- the whole run ------------------------------------------------------------------------


class Step(msgspec.Struct, frozen=True):
    """One step of the run: its group (for --only), name, title and what it measures."""

    group: str
    name: str
    title: str
    run: Callable[[], Awaitable[Measurement]]


def plan_steps(settings: Settings, bounds: Bounds, groups: Sequence[str] = GROUPS) -> list[Step]:
    """The steps of a run, in order, limited to ``groups``."""
    s = bounds.seconds
    steps = [
        Step(
            "rabbitmq",
            "rabbitmq.publish.single",
            "rabbitmq: persistent confirmed publish, 1 recipient/message",
            lambda: measure_amqp_publish(
                settings,
                batch_size=1,
                seconds=s,
                max_messages=bounds.max_messages,
                in_flight=bounds.publish_in_flight,
            ),
        ),
        Step(
            "rabbitmq",
            "rabbitmq.publish.batch",
            f"rabbitmq: persistent confirmed publish, {bounds.batch_size} recipients/message",
            lambda: measure_amqp_publish(
                settings,
                batch_size=bounds.batch_size,
                seconds=s,
                max_messages=bounds.max_batches,
                in_flight=bounds.batch_in_flight,
            ),
        ),
        Step(
            "postgresql",
            "postgresql.copy",
            "postgresql: COPY into a TEMP table",
            lambda: measure_pg_copy(settings, seconds=s, max_rows=bounds.max_copy_rows),
        ),
        Step(
            "postgresql",
            "postgresql.insert",
            "postgresql: row-by-row INSERT into a TEMP table",
            lambda: measure_pg_insert(settings, seconds=s, max_rows=bounds.max_insert_rows),
        ),
        Step(
            "redis",
            "redis.lua",
            "redis: small Lua script, one call at a time",
            lambda: measure_redis_lua(settings, seconds=s, max_calls=bounds.max_lua_calls),
        ),
        Step(
            "redis",
            "redis.pipeline",
            "redis: pipelined INCRBY",
            lambda: measure_redis_pipeline(settings, seconds=s, max_commands=bounds.max_pipelined),
        ),
        Step(
            "http",
            "http.loopback",
            "http: loopback GET against an in-process aiohttp server",
            lambda: measure_http_loopback(
                seconds=s,
                max_requests=bounds.max_http_requests,
                concurrency=bounds.http_concurrency,
            ),
        ),
    ]
    return [step for step in steps if step.group in groups]


def _failed(step: Step, exc: Exception) -> Measurement:
    return Measurement(
        step=step.name,
        description=step.title,
        unit="",
        count=0,
        operations=0,
        seconds=0.0,
        error=f"{exc.__class__.__name__}: {exc}"[:300],
    )


async def run_primitives(
    settings: Settings,
    bounds: Bounds,
    *,
    groups: Sequence[str] = GROUPS,
    progress: Callable[[str], None] = print,
) -> PrimitivesReport:
    """Run the selected steps one after another; a failing step is reported, not fatal."""
    ensure_local(settings)
    started_at = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()[0]
    steps = plan_steps(settings, bounds, groups)
    results: list[Measurement] = []
    for number, step in enumerate(steps, 1):
        progress(f"[{number}/{len(steps)}] {step.title} (up to {bounds.seconds:g} s) ...")
        try:
            measured = await step.run()
        except Exception as exc:  # a service down or misbehaving fails its step only
            measured = _failed(step, exc)
            progress(f"      failed: {measured.error}")
        else:
            progress(f"      {format_rate(measured)}")
        results.append(measured)
    return PrimitivesReport(
        host=platform.node(),
        cpus=os.cpu_count() or 0,
        started_at=started_at,
        load_average_before=load_before,
        load_average_after=os.getloadavg()[0],
        bounds=bounds,
        measurements=results,
    )


# --- output -------------------------------------------------------------------------------


def format_rate(m: Measurement) -> str:
    """``6,512 recipients/s (19,600 in 3.01 s, 153.6 µs/op)``."""
    return (
        f"{m.rate:,.0f} {m.unit}/s ({m.count:,} in {m.seconds:.2f} s, "
        f"{m.micros_per_operation:,.1f} µs per {_operation_name(m)})"
    )


def _operation_name(m: Measurement) -> str:
    return {
        "rabbitmq.publish.single": "message",
        "rabbitmq.publish.batch": "message",
        "postgresql.copy": "COPY",
        "postgresql.insert": "INSERT",
        "redis.lua": "call",
        "redis.pipeline": "pipeline",
        "http.loopback": "request",
    }.get(m.step, "operation")


def format_table(report: PrimitivesReport) -> str:
    """The report as a plain-text table."""
    header = (
        f"Herald primitives on {report.host}: {report.cpus} CPUs, "
        f"load average {report.load_average_before:.2f} before, "
        f"{report.load_average_after:.2f} after; up to {report.bounds.seconds:g} s per step"
    )
    rows = [("step", "rate", "count", "seconds", "µs/op", "ARCHITECTURE.md")]
    for m in report.measurements:
        if m.error:
            rows.append((m.step, "FAILED", "", "", "", m.error))
        else:
            rows.append(
                (
                    m.step,
                    f"{m.rate:,.0f} {m.unit}/s",
                    f"{m.count:,}",
                    f"{m.seconds:.2f}",
                    f"{m.micros_per_operation:,.1f}",
                    m.reference,
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [header, ""]
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])]
        cells += [row[c].rjust(widths[c]) for c in range(1, 5)]
        cells.append(row[5])
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


class _ReportJson(msgspec.Struct, frozen=True, kw_only=True):
    step: str
    description: str
    unit: str
    count: int
    operations: int
    seconds: float
    rate: float
    micros_per_operation: float
    reference: str
    error: str | None


def report_json(report: PrimitivesReport) -> bytes:
    """The report as JSON, with each measurement's rate spelled out."""
    measurements = [
        _ReportJson(
            step=m.step,
            description=m.description,
            unit=m.unit,
            count=m.count,
            operations=m.operations,
            seconds=round(m.seconds, 4),
            rate=round(m.rate, 1),
            micros_per_operation=round(m.micros_per_operation, 2),
            reference=m.reference,
            error=m.error,
        )
        for m in report.measurements
    ]
    document = msgspec.structs.asdict(report) | {"measurements": measurements}
    return msgspec.json.encode(document)
