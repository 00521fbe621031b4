"""``herald drill NAME``: a campaign with receipts, triggers and operator reads, and a fault
injected half-way through it; the last line printed is JSON with what was lost.

Set-up (not measured), as ``herald load``: a database of its own (``<database>_drill``,
``--recipients`` clients, kept for the next run with the same number), templates, a
producer and a trigger rule, high rate limits; a Redis server of the drill's own (on a
free port: restarting it disturbs nobody else); the admin API, the simulators and
``herald worker`` as processes of their own. The campaign goes by Viber, falling back to
SMS for the ~20 % of phones the Viber simulator does not know; receipts flow back; a
producer posts 20 trigger events/s (an SMS each; a refused post is posted again with the
same event ids, as a producer does); four operators open cards in a loop.

The campaign is paced (a per-minute limit) to send for about 150 s, as real ones are; when
~30 % of its recipients are processed, the fault:

- ``kill-worker``: ``kill -9`` one bulk worker process (the worker supervisor starts it again);
- ``kill-all-workers``: ``kill -9`` every worker process, then ``herald worker`` again;
- ``broker-restart``: ``rabbitmqctl stop_app``, 10 s, ``start_app`` (the machine's broker!);
- ``db-restart``: PostgreSQL fast shutdown and start (the machine's server!);
- ``redis-restart``: the drill's Redis killed and started empty (token buckets, caches gone);
- ``sms-outage``: the SMS provider answers 503 to everything for ``--fault-seconds``;
- ``viber-429``: the Viber provider answers 429 to everything for ``--fault-seconds``;
- ``api-kill``: ``kill -9`` the API under load, then start it again;
- ``host-loss``: the workers run as two "hosts", each ``herald worker`` in a network
  namespace of its own with its own address (``ip netns``, a veth pair each; the services,
  on loopback here, are reached through TCP forwarders on each link); host 1's link goes
  down and its processes are killed; host 2's workers, consuming every shard as well, go on
  and take host 1's unacknowledged batches once the broker has given up on its link.

Then it waits for the campaign to complete and for the triggers, and prints: ``drill``,
``recipients``, ``lost`` (recipients without an outcome, and messages recorded as sent that
no provider accepted), ``duplicates`` (submissions of an already accepted message id at the
simulators, which deduplicate by it: what a provider without idempotency keys would have
delivered twice), ``delivered_twice`` (recipients reached by Viber and by the SMS fallback
as well), ``recover_s`` (from the end of the fault until the work it stopped moves
again), ``failed_requests`` and ``failed_for_s`` (operator reads that failed, and the time
from the first to the last of them), ``triggers``, ``triggers_lost`` (accepted events whose
SMS never reached the simulator), ``seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import msgspec

from dispatcher.campaigns import store as campaigns
from dispatcher.campaigns.types import AllClientsAudience, CampaignSpec
from herald.audit import SYSTEM
from herald.cli.bench.campaign import prepare_database, wait_http
from herald.cli.load import (
    EVENT_TYPE,
    MISSING_TRIGGERS,
    free_port,
    prepare_fixture,
    rig_settings,
    trigger_latencies,
)
from herald.db import init_connection
from herald.settings import Settings, env_name

Say = Callable[[str], None]
RECEIPT_TIMEOUT_S = 120
SEND_SECONDS = 150
EVENTS_PER_S = 20
OPERATORS = 4


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            with open(f"/proc/{current}/task/{current}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return found


class Rig:
    """The drill's processes: a Redis of its own, the API, the simulators, the workers."""

    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings = settings
        self.workers = workers
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        for field in msgspec.structs.fields(settings):
            self.env[env_name(field.name)] = str(getattr(settings, field.name))
        self.env["HERALD_LOG_FORMAT"] = "console"
        run = [sys.executable, "-m", "herald"]
        self.commands = {
            "redis": [
                shutil.which("redis-server") or "redis-server",
                "--port",
                settings.redis_url.rsplit(":", 1)[1].split("/")[0],
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--logfile",
                "",
                "--loglevel",
                "warning",
            ],
            "api": [*run, "serve"],
            "simulators": [*run, "simulators"],
            "worker": [*run, "worker", "--processes", str(workers)],
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.hosts: list[Host] = []

    def start(self, kind: str) -> None:
        self.procs[kind] = subprocess.Popen(
            self.commands[kind], env=self.env, start_new_session=True
        )

    def start_on(self, host: Host) -> None:
        """``herald worker`` on ``host``: in its namespace, the services through its link."""
        env = dict(self.env)
        remote = host.settings(self.settings)
        for field in msgspec.structs.fields(remote):
            env[env_name(field.name)] = str(getattr(remote, field.name))
        self.procs[f"worker@{host.n}"] = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, *self.commands["worker"]],
            env=env,
            start_new_session=True,
        )

    def kill(self, kind: str) -> None:
        """``kill -9`` the process group of ``kind`` (a process and its children)."""
        proc = self.procs[kind]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)

    def worker_children(self) -> list[int]:
        """The worker processes under ``herald worker`` in the order they were started (bulk
        1..n, then realtime); not multiprocessing's resource tracker."""
        found = []
        for pid in _tree(self.procs["worker"].pid)[1:]:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"spawn_main" in f.read():
                        found.append(pid)
            except OSError:
                continue
        return sorted(found)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


class Forwarder:
    """TCP forwarders in this (the services') network namespace: ``listen``:port ->
    127.0.0.1:port, for the services that listen on loopback only. A host whose link is
    down gets no answer at all, as across a real network: the services learn of its loss
    from their own timeouts (AMQP heartbeats, PostgreSQL's), not from a closed socket."""

    def __init__(self) -> None:
        self.servers: list[asyncio.Server] = []
        self.links: dict[str, list[asyncio.StreamWriter]] = {}
        self._cutting: asyncio.Task[None] | None = None

    def cut(self, listen: str, after: float) -> None:
        """The host behind ``listen`` is gone: after ``after`` seconds (the services' own
        detection of a silent peer: PostgreSQL's TCP keepalives, AMQP heartbeats) its
        connections to the services are dropped, as the services would drop them."""

        async def drop() -> None:
            await asyncio.sleep(after)
            for writer in self.links.pop(listen, []):
                writer.transport.abort()

        self._cutting = asyncio.create_task(drop())

    async def add(self, listen: str, port: int) -> None:
        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                writer.close()
                return
            self.links.setdefault(listen, []).append(up_writer)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        self.servers.append(await asyncio.start_server(handle, listen, port))

    def close(self) -> None:
        for server in self.servers:
            server.close()


class Host:
    """A "host": a network namespace with its own address, linked to this one by a veth
    pair (``10.231.<n>.2`` inside, ``10.231.<n>.1`` on this side)."""

    def __init__(self, n: int) -> None:
        tag = os.getpid() % 100_000
        self.n = n
        self.netns = f"herald-host{n}-{tag}"
        self.link = f"hl{n}x{tag}"  # this side of the pair (at most 15 characters)
        self.gateway = f"10.231.{n}.1"

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def create(self) -> None:
        inside = f"{self.link}i"
        self._ip("netns", "add", self.netns)
        self._ip("link", "add", self.link, "type", "veth", "peer", "name", inside)
        self._ip("link", "set", inside, "netns", self.netns)
        self._ip("addr", "add", f"{self.gateway}/30", "dev", self.link)
        self._ip("link", "set", self.link, "up")
        ns = ["netns", "exec", self.netns, "ip"]
        self._ip(*ns, "addr", "add", f"10.231.{self.n}.2/30", "dev", inside)
        self._ip(*ns, "link", "set", inside, "up")
        self._ip(*ns, "link", "set", "lo", "up")

    def cut(self) -> None:
        self._ip("link", "set", self.link, "down")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._ip("link", "del", self.link)
        with contextlib.suppress(subprocess.CalledProcessError):
            self._ip("netns", "del", self.netns)

    def settings(self, settings: Settings) -> Settings:
        """The settings of this host's processes: the services through its gateway."""

        def via(url: str) -> str:
            return url.replace("127.0.0.1", self.gateway).replace("localhost", self.gateway)

        return msgspec.structs.replace(
            settings,
            database_url=via(settings.database_url),
            database_admin_url=via(settings.database_admin_url),
            amqp_url=via(settings.amqp_url),
            redis_url=via(settings.redis_url),
            sms_gateway_url=via(settings.sms_gateway_url),
            viber_api_url=via(settings.viber_api_url),
            billing_url=via(settings.billing_url),
            smtp_host=self.gateway,
        )


def _port(url: str, default: int) -> int:
    return urlsplit(url).port or default


class Operators:
    """Operators opening cards in a loop; counts the requests that failed, and when."""

    def __init__(self, base: str, clients: list[int]) -> None:
        self.base, self.clients = base, clients
        self.ok = 0
        self.failed: list[float] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def _one(self, session: aiohttp.ClientSession) -> None:
        token = ""
        rnd = random.Random()
        while True:
            try:
                if not token:
                    async with session.post(
                        f"{self.base}/api/v1/auth/login",
                        json={"login": "operator.cc", "password": "Herald-Occ-2026!"},
                    ) as r:
                        if r.status != 200:
                            raise aiohttp.ClientError(f"login {r.status}")
                        token = (await r.json())["token"]
                client_id = rnd.choice(self.clients)
                async with session.get(
                    f"{self.base}/api/v1/clients/{client_id}",
                    headers={"Authorization": f"Bearer {token}"},
                ) as r:
                    await r.read()
                    if r.status == 401:
                        token = ""
                    if r.status != 200:
                        raise aiohttp.ClientError(f"card {r.status}")
                self.ok += 1
            except (aiohttp.ClientError, TimeoutError):
                self.failed.append(time.monotonic())
                await asyncio.sleep(0.5)
            await asyncio.sleep(0.2)

    def start(self, session: aiohttp.ClientSession) -> None:
        self._tasks = [asyncio.create_task(self._one(session)) for _ in range(OPERATORS)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class Producer:
    """A billing system posting payments; a refused post is posted again, same event ids."""

    def __init__(self, base: str, key: str, clients: list[int], tag: str) -> None:
        self.base, self.key, self.clients, self.tag = base, key, clients, tag
        self.accepted = 0
        self.refused_posts = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self, session: aiohttp.ClientSession) -> None:
        n = 0
        while True:
            batch = [
                {
                    "event_id": f"drill-{self.tag}-{n + i}",
                    "type": EVENT_TYPE,
                    "client_id": self.clients[(n + i) % len(self.clients)],
                    "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "data": {"amount": 100 + i},
                }
                for i in range(EVENTS_PER_S // 2)
            ]
            n += len(batch)
            while True:
                try:
                    async with session.post(
                        f"{self.base}/api/v1/events",
                        json={"events": batch},
                        headers={"Authorization": f"Bearer {self.key}"},
                    ) as r:
                        await r.read()
                        if r.status == 200:
                            self.accepted += len(batch)
                            break
                except (aiohttp.ClientError, TimeoutError):
                    pass
                self.refused_posts += 1
                await asyncio.sleep(1.0)
            await asyncio.sleep(0.5)

    def start(self, session: aiohttp.ClientSession) -> None:
        self._task = asyncio.create_task(self._run(session))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def _sim(
    session: aiohttp.ClientSession, sim: str, method: str, path: str, body: Any = None
) -> Any:
    async with session.request(method, f"{sim}{path}", json=body) as r:
        r.raise_for_status()
        return await r.json()


async def _reached(
    session: aiohttp.ClientSession, sim: str, channel: str, campaign_id: int
) -> set[int]:
    """The clients of the campaign whose message the channel's simulator accepted."""
    records = (await _sim(session, sim, "GET", f"/{channel}/sim/messages?limit=10000000"))[
        "messages"
    ]
    prefix = f"c{campaign_id}:"
    return {
        int(r["message_id"].split(":")[1])
        for r in records
        if r["message_id"].startswith(prefix) and r["status"] == "accepted"
    }


async def account(settings: Settings, campaign_id: int) -> dict[str, int]:
    """Every recipient's fate: the snapshot's clients (each once: a rate-limit hold released
    makes a new batch of the same clients), and what happened to their messages."""
    conn = await asyncpg.connect(settings.database_admin_url)
    try:
        row = await conn.fetchrow(
            """
            WITH audience AS (
                SELECT DISTINCT unnest(client_ids) AS client_id FROM campaign_batches
                WHERE campaign_id = $1 AND step = 0 AND batch_no IS NOT NULL),
            fate AS (
                SELECT client_id, bool_or(status = 'sent') AS sent,
                       bool_or(status IN ('skipped', 'failed')) AS other
                FROM message_events WHERE campaign_id = $1 GROUP BY client_id)
            SELECT count(*) AS recipients,
                   count(*) FILTER (WHERE f.sent) AS reached,
                   count(*) FILTER (WHERE NOT coalesce(f.sent, false) AND f.other) AS not_sendable,
                   count(*) FILTER (WHERE f.client_id IS NULL) AS lost
            FROM audience a LEFT JOIN fate f USING (client_id)
            """,
            campaign_id,
        )
        sent_messages = await conn.fetchval(
            "SELECT count(DISTINCT message_id) FROM message_events WHERE campaign_id = $1 "
            "AND status = 'sent'",
            campaign_id,
        )
        return {**dict(row), "sent_messages": sent_messages}
    finally:
        await conn.close()


async def explain_missing(settings: Settings, say: Say) -> None:
    """What the database says of each trigger message the simulator never received."""
    conn = await asyncpg.connect(settings.database_admin_url)
    try:
        for mid in MISSING_TRIGGERS[:20]:
            unit = int(mid[1:].split(":")[0])
            row = await conn.fetchrow(
                "SELECT step, done, attempts, refused, created_at, done_at "
                "FROM realtime_messages WHERE id = $1",
                unit,
            )
            events = await conn.fetch(
                "SELECT status, reason, at FROM message_events WHERE message_id = $1 ORDER BY at",
                mid,
            )
            held = await conn.fetchval(
                "SELECT reason FROM held_messages WHERE message_id = $1", mid
            )
            say(
                f"  trigger {mid} not at the simulator: {dict(row) if row else None}, "
                f"events {[tuple(e) for e in events]}, held {held}"
            )
    finally:
        await conn.close()


_watch: dict[str, asyncpg.Connection] = {}


async def _value(settings: Settings, sql: str, *args: Any) -> Any:
    """One value, through the drill's one watching connection (kept open: this machine's
    PostgreSQL is shared and often near its connection limit); reconnects when it is lost
    (a database restart) or cannot be had for a moment."""
    for attempt in range(120):
        try:
            conn = _watch.get(settings.database_admin_url)
            if conn is None or conn.is_closed():
                conn = await asyncpg.connect(settings.database_admin_url)
                _watch[settings.database_admin_url] = conn
            return await conn.fetchval(sql, *args)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            _watch.pop(settings.database_admin_url, None)
            if attempt == 119:
                raise
            await asyncio.sleep(1.0)
    raise AssertionError("unreachable")


async def _count(settings: Settings, sql: str, *args: Any) -> int:
    return int(await _value(settings, sql, *args) or 0)


async def _wait_for(probe: Callable[[], Awaitable[bool]], seconds: float, what: str) -> float:
    """Poll ``probe`` until true; the seconds it took (RuntimeError after ``seconds``)."""
    started = time.monotonic()
    while not await probe():
        if time.monotonic() - started > seconds:
            raise RuntimeError(f"{what}: not within {seconds:.0f} s")
        await asyncio.sleep(0.2)
    return time.monotonic() - started


class Drill:
    def __init__(
        self, name: str, rig: Rig, session: aiohttp.ClientSession, campaign_id: int, fault_s: int
    ) -> None:
        self.name, self.rig, self.session = name, rig, session
        self.campaign_id, self.fault_s = campaign_id, fault_s
        self.settings = rig.settings
        self.sim = f"http://127.0.0.1:{self.settings.simulators_port}"
        self.forwarder = Forwarder()

    async def batches_done(self, shards: list[int] | None = None) -> int:
        return await _count(
            self.settings,
            "SELECT count(*) FROM campaign_batches WHERE campaign_id = $1 AND done "
            "AND ($2::int[] IS NULL OR shard = ANY($2::int[]))",
            self.campaign_id,
            shards,
        )

    async def accepted(self, channel: str) -> int:
        return int((await _sim(self.session, self.sim, "GET", f"/{channel}/sim/stats"))["accepted"])

    async def moves(self, counter: Callable[[], Awaitable[int]], seconds: float = 600) -> float:
        """Seconds until ``counter`` grows (or the campaign is over: nothing left to move)."""
        before = await counter()

        async def grew() -> bool:
            if await counter() > before:
                return True
            status = await _count_text(
                self.settings, f"SELECT status FROM campaigns WHERE id = {int(self.campaign_id)}"
            )
            return status in ("completed", "stopped", "failed")

        return await _wait_for(grew, seconds, f"{self.name}: no progress after the fault")

    async def inject(self) -> float:
        """Inject the fault and remove it; the seconds until the stopped work moved again
        (counted from the fault's end)."""
        name = self.name
        if name == "kill-worker":
            victim = self.rig.worker_children()[0]  # bulk process 1: shards s % workers == 0
            shards = [s for s in range(self.settings.shards) if s % self.rig.workers == 0]
            os.kill(victim, signal.SIGKILL)
            return await self.moves(lambda: self.batches_done(shards))
        if name == "kill-all-workers":
            self.rig.kill("worker")
            self.rig.start("worker")
            return await self.moves(self.batches_done)
        if name == "api-kill":
            self.rig.kill("api")
            await asyncio.sleep(2)
            self.rig.start("api")
            base = f"http://127.0.0.1:{self.settings.http_port}"
            ended = time.monotonic()
            await wait_http(f"{base}/readyz", 120)
            return time.monotonic() - ended
        if name == "redis-restart":
            self.rig.kill("redis")
            await asyncio.sleep(2)
            self.rig.start("redis")
            return await self.moves(self.batches_done)
        if name == "broker-restart":
            subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True)
            await asyncio.sleep(10)
            subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True)
            return await self.moves(self.batches_done)
        if name == "db-restart":
            data = await _count_text(self.settings, "SHOW data_directory")
            subprocess.run(
                ["su", "postgres", "-c", f"pg_ctl -D {data} -m fast -w restart"],
                check=True,
                capture_output=True,
            )
            return await self.moves(self.batches_done)
        if name in ("sms-outage", "viber-429"):
            channel = "sms" if name == "sms-outage" else "viber"
            broken = (
                {"transient_rate": 1.0, "fail_status": 503}
                if channel == "sms"
                else {"max_per_second": 0.001, "retry_after_s": 1.0}
            )
            healthy = (
                {"transient_rate": 0.0}
                if channel == "sms"
                else {"max_per_second": 0.0, "retry_after_s": None}
            )
            await _sim(self.session, self.sim, "PUT", f"/{channel}/sim/config", broken)
            await asyncio.sleep(self.fault_s)
            await _sim(self.session, self.sim, "PUT", f"/{channel}/sim/config", healthy)
            return await self.moves(lambda: self.accepted(channel))
        if name == "host-loss":
            # Host 1 is cut off: its link goes down first (nothing it sends arrives any
            # more), then its processes die. Host 2's workers consume every shard too; they
            # get host 1's unacknowledged batches once the broker gives up on its link.
            conn = await asyncpg.connect(self.settings.database_admin_url)
            try:
                # The batches in hand (started, not done): host 1's among them are stuck
                # until the broker hands them to host 2; recovered when all are done.
                in_hand = [
                    r[0]
                    for r in await conn.fetch(
                        "SELECT id FROM campaign_batches WHERE campaign_id = $1 "
                        "AND NOT done AND attempts > 0",
                        self.campaign_id,
                    )
                ]
                lost = self.rig.hosts[0]
                lost.cut()
                self.rig.kill(f"worker@{lost.n}")
                # PostgreSQL's keepalives (30 s idle, 3 probes 10 s apart) end its sessions.
                self.forwarder.cut(lost.gateway, after=60)

                async def taken_over() -> bool:
                    left = await conn.fetchval(
                        "SELECT count(*) FROM campaign_batches "
                        "WHERE id = ANY($1::bigint[]) AND NOT done",
                        in_hand,
                    )
                    return left == 0

                return await _wait_for(taken_over, 900, "host 1's batches were not taken over")
            finally:
                await conn.close()
        raise SystemExit(f"herald drill: {name} is not implemented")


async def _count_text(settings: Settings, sql: str) -> str:
    return str(await _value(settings, sql))


async def run_drill(base: Settings, args: argparse.Namespace, say: Say) -> dict[str, Any]:
    name = args.name
    settings = rig_settings(base, "_drill", f"drill{os.getpid()}", args.workers)
    settings = msgspec.structs.replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    tag = f"{name}-{int(time.time())}"
    await prepare_database(settings, args.recipients, say)
    fixture = await prepare_fixture(settings, tag)
    rig = Rig(settings, args.workers)
    forwarder = Forwarder()
    started = time.time()
    try:
        for kind in ("redis", "simulators", "api"):
            rig.start(kind)
        if name == "host-loss":
            rig.hosts = [Host(1), Host(2)]
            ports = {
                _port(settings.database_url, 5432),
                _port(settings.amqp_url, 5672),
                _port(settings.redis_url, 6379),
                settings.simulators_port,
                settings.smtp_port,
            }
            for host in rig.hosts:
                host.remove()  # a run killed before its clean-up
                host.create()
                for port in ports:
                    await forwarder.add(host.gateway, port)
            for host in rig.hosts:
                rig.start_on(host)
        else:
            rig.start("worker")
        api = f"http://127.0.0.1:{settings.http_port}"
        sim = f"http://127.0.0.1:{settings.simulators_port}"
        await wait_http(f"{api}/readyz", 120)
        await wait_http(f"{sim}/healthz", 60)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for channel in ("sms", "viber"):
                await _sim(session, sim, "POST", f"/{channel}/sim/reset")
                await _sim(
                    session,
                    sim,
                    "PUT",
                    f"/{channel}/sim/config",
                    {
                        "delivered_after_ms": 200,
                        "read_share": 0.0,
                        "keep_messages": 2_000_000,
                        "unknown_address_pattern": "[05]$" if channel == "viber" else None,
                    },
                )
            conn = await asyncpg.connect(settings.database_url)
            await init_connection(conn)
            try:
                campaign = await campaigns.create(
                    conn,
                    SYSTEM,
                    CampaignSpec(
                        name=f"drill {tag}",
                        template_id=fixture.campaign_template_id,
                        audience=AllClientsAudience(),
                        channel_chain=["viber", "sms"],
                        receipt_timeout_seconds=RECEIPT_TIMEOUT_S,
                        # Paced to last about SEND_SECONDS, as a real campaign is: the
                        # fault then meets it mid-send, whatever the size.
                        rate_per_minute=max(600, args.recipients * 60 // SEND_SECONDS),
                    ),
                )
                await campaigns.launch(conn, SYSTEM, campaign.id, None)
            finally:
                await conn.close()
            say(f"campaign {campaign.id} launched; chain viber -> sms")
            operators = Operators(api, fixture.trigger_clients[:500])
            producer = Producer(api, fixture.producer_key, fixture.trigger_clients, tag)
            operators.start(session)
            producer.start(session)
            drill = Drill(name, rig, session, campaign.id, args.fault_seconds)
            drill.forwarder = forwarder
            total = await _count(
                settings,
                "SELECT count(*) FROM accounts WHERE status = 'active'",
            )

            async def under_way() -> bool:
                done = await _count(
                    settings,
                    "SELECT coalesce(sum(cardinality(client_ids)), 0) FROM campaign_batches "
                    "WHERE campaign_id = $1 AND step = 0 AND done",
                    campaign.id,
                )
                return done >= 0.3 * total

            await _wait_for(under_way, 900, "the campaign did not get under way")
            say(f"injecting {name}")
            recover_s = await drill.inject()
            say(f"  work moved again {recover_s:.1f} s after the fault ended")

            async def completed() -> bool:
                status = await _count_text(
                    settings, f"SELECT status FROM campaigns WHERE id = {int(campaign.id)}"
                )
                return status in ("completed", "stopped", "failed")

            await _wait_for(completed, 1800, "the campaign did not complete")
            await producer.stop()
            await operators.stop()
            stats = {
                c: await _sim(session, sim, "GET", f"/{c}/sim/stats") for c in ("viber", "sms")
            }
            reached_by = {c: await _reached(session, sim, c, campaign.id) for c in ("viber", "sms")}
            status = await _count_text(
                settings, f"SELECT status FROM campaigns WHERE id = {int(campaign.id)}"
            )
        latencies, triggers_lost = await trigger_latencies(settings, fixture.rule_id, started)
        if triggers_lost:
            await explain_missing(settings, say)
    finally:
        rig.stop()
        forwarder.close()
        for host in rig.hosts:
            host.remove()
    fate = await account(settings, campaign.id)
    accepted = sum(s["accepted"] for s in stats.values())
    failed = operators.failed
    return {
        "drill": name,
        "recipients": fate["recipients"],
        "status": status,
        "lost": fate["lost"] + max(0, fate["sent_messages"] - accepted),
        "duplicates": sum(s["duplicates"] for s in stats.values()),
        # Recipients whose Viber message was accepted and who got the SMS fallback as well
        # (a lost receipt, then the receipt timeout): a message twice, on two channels.
        "delivered_twice": len(reached_by["viber"] & reached_by["sms"]),
        "recover_s": round(recover_s, 1),
        "failed_requests": len(failed),
        "failed_for_s": round(failed[-1] - failed[0], 1) if failed else 0.0,
        "operator_requests_ok": operators.ok,
        "triggers": len(latencies) + triggers_lost,
        "triggers_lost": triggers_lost,
        "producer_posts_retried": producer.refused_posts,
        "reached": fate["reached"],
        "not_sendable": fate["not_sendable"],
        "seconds": round(time.time() - started, 1),
    }


async def main(settings: Settings, args: argparse.Namespace) -> int:
    figures = await run_drill(settings, args, lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(figures, ensure_ascii=False))
    return 0 if figures["lost"] == 0 and figures["triggers_lost"] == 0 else 1
