"""``herald load``: the staff's working day in locust while a campaign sends and producers post.

Set-up (not measured): a database of its own (``<database>_load``, seeded with ``--clients``
clients and kept for the next run with the same number), the demo users, an SMS template
operators may send, a Viber template for campaigns, a producer and a trigger rule (an
urgent SMS on ``payment.received``), high rate limits; then the admin API, the simulators
and the workers as processes of their own, as in production.

Measured:

1. the campaign alone: campaigns to every client run back to back, nothing else, for
   ``--alone-seconds``; recipients processed per second;
2. the same while ``--users`` simulated staff (loadtest/locustfile.py, ``--processes``
   locust processes) work for ``--seconds`` and the producers post ``--event-rate``
   events/s; locust writes its CSV and HTML reports into ``--out``;
3. each triggered message's time from its event's intake (``realtime_messages.created_at``)
   to the SMS simulator receiving it; messages not received within 60 s of the end are
   ``triggers_lost``.

The last line printed is JSON: ``users``, ``seconds``, ``routes`` (per request name: p50,
p95, p99 in ms and count), ``errors`` (failed requests), ``campaign_rate_per_s``,
``campaign_alone_rate_per_s``, ``trigger_ms`` (p50, p99), ``triggers``, ``triggers_lost``.
``--sample-only FILE`` only writes the locustfile's data file for the database of the
current settings (for a run against staging).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import msgspec

from crm import users as user_store
from crm.cases import groups
from crm.users import PasswordPolicy
from dispatcher.campaigns import store as campaigns
from dispatcher.campaigns.types import AllClientsAudience, CampaignSpec
from dispatcher.realtime import operator_send, producers, triggers
from dispatcher.templating import store as template_store
from dispatcher.templating.templates import TemplateDraft, TemplateEngine, Variants
from herald.audit import SYSTEM
from herald.cli.bench.campaign import Processes, prepare_database, wait_http
from herald.cli.demo import ensure_demo_users
from herald.db import init_connection
from herald.errors import Conflict
from herald.settings import Settings
from rules import rate_limit

Say = Callable[[str], None]
EVENT_TYPE = "payment.received"
ROOT = Path(__file__).resolve().parents[2]

_SAMPLE = """
SELECT c.id AS client_id, c.last_name, c.first_name, a.id AS account_id, a.or_number,
       a.street, a.building,
       (SELECT ct.phone FROM account_contacts ac JOIN contacts ct ON ct.id = ac.contact_id
        WHERE ac.account_id = a.id AND ac.is_active AND ct.is_active AND ct.phone IS NOT NULL
        LIMIT 1) AS phone
FROM clients c
JOIN LATERAL (SELECT * FROM accounts WHERE client_id = c.id AND status = 'active'
              ORDER BY id LIMIT 1) a ON true
WHERE c.id % $2 = 0
LIMIT $1
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def rig_settings(
    settings: Settings, suffix: str, namespace: str, workers: int, pool: int = 4
) -> Settings:
    """Settings of every process of a run: a database and namespace of its own, free ports,
    ``pool`` connections per process at most (this machine's PostgreSQL is shared)."""
    name = urlsplit(settings.database_admin_url).path.lstrip("/") + suffix
    api, sim, smtp = free_port(), free_port(), free_port()
    return msgspec.structs.replace(
        settings,
        database_url=_database(settings.database_url, name),
        database_admin_url=_database(settings.database_admin_url, name),
        namespace=namespace,
        http_port=api,
        public_base_url=f"http://127.0.0.1:{api}",
        simulators_port=sim,
        sms_gateway_url=f"http://127.0.0.1:{sim}/sms",
        viber_api_url=f"http://127.0.0.1:{sim}/viber",
        smtp_port=smtp,
        billing_url=f"http://127.0.0.1:{sim}/billing",
        log_level="WARNING",
        worker_processes=workers,
        db_pool_min=1,
        db_pool_max=pool,
    )


STAFF_PASSWORD = "Herald-Load-2026!"
# Simulated staff per user class (locustfile weights): each person logs in as a user of
# their own, as staff do (five logins at once of one account would lock it out).
STAFF_SHARE = {
    "operator_cc": 60,
    "integration": 6,
    "operator_cos": 15,
    "supervisor": 3,
    "marketer": 2,
}
GROUPS = {"operator_cc": "cc_l1", "operator_cos": "service_centre"}


async def ensure_staff(
    conn: asyncpg.Connection, settings: Settings, users: int
) -> dict[str, list[str]]:
    """``load.<role>.<n>`` users for ``users`` simulated staff (made once, kept), the
    operators in their case groups; role -> logins."""
    total = sum(STAFF_SHARE.values())
    staff: dict[str, list[str]] = {}
    existing = {r["login"] for r in await conn.fetch("SELECT login FROM users")}
    policy = PasswordPolicy(settings.password_min_length)
    for role, share in STAFF_SHARE.items():
        count = -(-users * share // total) + 1
        staff[role] = [f"load.{role.replace('_', '')}.{n:03d}" for n in range(1, count + 1)]
        for login in staff[role]:
            if login not in existing:
                await user_store.create_user(
                    conn,
                    SYSTEM,
                    policy,
                    login=login,
                    full_name=f"Навантаження {login}",
                    password=STAFF_PASSWORD,
                    roles=[role],
                )
        if role in GROUPS:
            ids = [
                r[0]
                for r in await conn.fetch(
                    "SELECT id FROM users WHERE login = ANY($1::text[])", staff[role]
                )
            ]
            group = await groups.get_group(conn, GROUPS[role])
            await groups.set_members(conn, SYSTEM, group.code, sorted({*group.member_ids, *ids}))
    return staff


class Fixture(msgspec.Struct):
    """What a run set up in its database."""

    operator_template_id: int
    campaign_template_id: int
    trigger_template_id: int
    producer_key: str
    rule_id: int
    trigger_clients: list[int]


async def _template(conn: asyncpg.Connection, name: str, variants: dict[str, Any]) -> int:
    draft = TemplateDraft(name=name, variants=msgspec.convert(variants, Variants))
    template, _ = await template_store.create(
        conn, SYSTEM, TemplateEngine(), draft=draft, topic="service", urgent=True
    )
    return template.id


async def prepare_fixture(settings: Settings, tag: str) -> Fixture:
    """Demo users, templates, a producer, a trigger rule, high rate limits."""
    conn = await asyncpg.connect(settings.database_url)
    await init_connection(conn)
    try:
        await ensure_demo_users(conn, PasswordPolicy(settings.password_min_length))
        for channel in ("sms", "viber", "email"):
            await rate_limit.set_limit(
                conn, SYSTEM, channel=channel, provider=None, per_minute=10_000_000, per_hour=None
            )
        operator = await _template(
            conn,
            f"Оператор {tag}",
            {"sms": {"text": "{{ first_name }}, реквізити для оплати за ОР {{ or_number }}."}},
        )
        await operator_send.set_allowed(conn, SYSTEM, operator, True)
        campaign = await _template(
            conn,
            f"Кампанія {tag}",
            {
                "viber": {"text": "{{ first_name }}, нагадуємо про оплату за ОР {{ or_number }}."},
                "sms": {"text": "{{ first_name }}, нагадуємо про оплату за ОР {{ or_number }}."},
            },
        )
        trigger = await _template(
            conn,
            f"Тригер {tag}",
            {"sms": {"text": "{{ first_name }}, платіж за ОР {{ or_number }} отримано."}},
        )
        created = await producers.create(
            conn, SYSTEM, producers.ProducerSpec(name=f"load {tag}", event_types=[EVENT_TYPE])
        )
        rule = await triggers.create_rule(
            conn,
            SYSTEM,
            triggers.TriggerRuleSpec(
                name=f"load {tag}",
                event_type=EVENT_TYPE,
                template_id=trigger,
                channel_chain=["sms"],
            ),
        )
        clients = [
            r[0]
            for r in await conn.fetch(
                "SELECT DISTINCT a.client_id FROM accounts a "
                "JOIN account_contacts ac ON ac.account_id = a.id AND ac.is_active "
                "JOIN contacts ct ON ct.id = ac.contact_id AND ct.is_active "
                "AND ct.phone IS NOT NULL WHERE a.status = 'active' LIMIT 20000"
            )
        ]
        return Fixture(operator, campaign, trigger, created.api_key, rule.id, clients)
    finally:
        await conn.close()


async def write_sample(
    conn: asyncpg.Connection, path: Path, extra: dict[str, Any], count: int = 2000
) -> None:
    """The locustfile's data: real clients (ids, OR numbers, names and addresses as typed
    at the phone, local phone numbers), meters, and the run's ids."""
    total = await conn.fetchval("SELECT count(*) FROM clients")
    rows = await conn.fetch(_SAMPLE, count, max(1, total // (count * 2)))
    meters = [
        r[0]
        for r in await conn.fetch(
            "SELECT m.id FROM meters m JOIN accounts a ON a.id = m.account_id "
            "WHERE a.status = 'active' ORDER BY m.id LIMIT 2000"
        )
    ]
    clients = []
    for r in rows:
        phone = r["phone"]
        if phone and phone.startswith("+380"):
            phone = "0" + phone[4:]
        clients.append(
            {
                "client_id": r["client_id"],
                "account_id": r["account_id"],
                "or_number": r["or_number"],
                "phone": phone,
                "name": r["last_name"][: max(4, len(r["last_name"]) - 2)].lower(),
                "address": f"{(r['street'] or '')[:8]} {r['building'] or ''}".strip().lower(),
            }
        )
    path.write_text(json.dumps({"clients": clients, "meters": meters, **extra}, ensure_ascii=False))


class CampaignLoop:
    """Campaigns to every client, back to back, counting the recipients they process."""

    def __init__(self, settings: Settings, template_id: int) -> None:
        self.settings = settings
        self.template_id = template_id
        self.ids: list[int] = []
        self._task: asyncio.Task[None] | None = None

    async def processed(self, conn: asyncpg.Connection) -> int:
        return int(
            await conn.fetchval(
                "SELECT coalesce(sum(cardinality(client_ids)), 0) FROM campaign_batches "
                "WHERE campaign_id = ANY($1::bigint[]) AND done AND step = 0",
                self.ids,
            )
        )

    async def _launch(self, conn: asyncpg.Connection) -> int:
        campaign = await campaigns.create(
            conn,
            SYSTEM,
            CampaignSpec(
                name=f"load {len(self.ids) + 1}",
                template_id=self.template_id,
                audience=AllClientsAudience(),
                channel_chain=["viber"],
                receipt_timeout_seconds=600,
            ),
        )
        await campaigns.launch(conn, SYSTEM, campaign.id, None)
        self.ids.append(campaign.id)
        return campaign.id

    async def _run(self) -> None:
        conn = await asyncpg.connect(self.settings.database_url)
        await init_connection(conn)
        try:
            while True:
                campaign_id = await self._launch(conn)
                while True:
                    await asyncio.sleep(0.5)
                    status = await conn.fetchval(
                        "SELECT status FROM campaigns WHERE id = $1", campaign_id
                    )
                    if status in ("completed", "stopped", "failed"):
                        break
        finally:
            await conn.close()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        conn = await asyncpg.connect(self.settings.database_url)
        await init_connection(conn)
        try:
            for campaign_id in self.ids:
                with contextlib.suppress(Conflict):  # completed already
                    await campaigns.transition(conn, SYSTEM, campaign_id, "stop")
        finally:
            await conn.close()

    async def rate(self, seconds: float) -> float:
        """Recipients processed per second over the next ``seconds``, counted from the
        first batch done (the audience snapshot is not sending)."""
        conn = await asyncpg.connect(self.settings.database_admin_url)
        try:
            deadline = time.monotonic() + 120
            while await self.processed(conn) == 0:
                if time.monotonic() > deadline:
                    raise RuntimeError("the campaign processed nothing in 120 s")
                await asyncio.sleep(0.2)
            before, started = await self.processed(conn), time.monotonic()
            await asyncio.sleep(seconds)
            return (await self.processed(conn) - before) / (time.monotonic() - started)
        finally:
            await conn.close()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


async def trigger_latencies(
    settings: Settings, rule_id: int, since: float, wait: float = 60
) -> tuple[list[float], int]:
    """(latency in ms of each trigger message of the rule since ``since``, how many never
    reached the SMS simulator within ``wait`` s); messages skipped on purpose (the client
    has no phone, a stop list) are not counted."""
    conn = await asyncpg.connect(settings.database_admin_url)
    try:
        rows = await conn.fetch(
            "SELECT id, client_id, extract(epoch FROM created_at) AS at FROM realtime_messages r "
            "WHERE rule_id = $1 AND refused IS NULL AND created_at >= to_timestamp($2) "
            # skipped on purpose (no phone for SMS, a stop list): not to be delivered
            "AND NOT EXISTS (SELECT 1 FROM message_events e WHERE e.status = 'skipped' "
            "AND e.message_id = 't' || r.id || ':' || r.client_id || ':0')",
            rule_id,
            since,
        )
    finally:
        await conn.close()
    wanted = {f"t{r['id']}:{r['client_id']}:0": float(r["at"]) for r in rows}
    sim = f"http://127.0.0.1:{settings.simulators_port}"
    deadline = time.monotonic() + wait
    found: dict[str, float] = {}
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(
                f"{sim}/sms/sim/messages", params={"limit": "10000000"}
            ) as response:
                records = (await response.json())["messages"]
            found = {r["message_id"]: r["at"] for r in records if r["message_id"] in wanted}
            if len(found) == len(wanted) or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
    missing = sorted(set(wanted) - set(found))
    if missing:
        MISSING_TRIGGERS[:] = missing
    return [(found[m] - wanted[m]) * 1000 for m in found], len(missing)


MISSING_TRIGGERS: list[str] = []
"""The trigger message ids the last ``trigger_latencies`` did not find at the simulator."""


def read_locust_stats(prefix: Path) -> tuple[dict[str, dict[str, float]], int]:
    """(route -> p50, p95, p99, count; failures) from locust's ``<prefix>_stats.csv``."""
    routes: dict[str, dict[str, float]] = {}
    errors = 0
    with open(f"{prefix}_stats.csv", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["Name"] == "Aggregated":
                continue
            routes[row["Name"]] = {
                "p50": float(row["50%"] or 0),
                "p95": float(row["95%"] or 0),
                "p99": float(row["99%"] or 0),
                "count": int(row["Request Count"]),
            }
            errors += int(row["Failure Count"])
    return routes, errors


def run_locust(
    host: str,
    *,
    users: int,
    spawn_rate: float,
    seconds: int,
    processes: int,
    out: Path,
    env: dict[str, str],
    classes: list[str] | None = None,
) -> int:
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(ROOT / "loadtest" / "locustfile.py"),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(spawn_rate),
        "--run-time",
        f"{seconds}s",
        "--stop-timeout",
        "10",
        "-H",
        host,
        "--csv",
        str(out / "locust"),
        "--html",
        str(out / "locust.html"),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    if processes > 1:
        command += ["--processes", str(processes)]
    command += classes or []
    return subprocess.call(command, env={**os.environ, **env}, cwd=ROOT)


async def run_load(base: Settings, args: argparse.Namespace, say: Say) -> dict[str, Any]:
    settings = rig_settings(base, "_load", "load", args.workers, pool=8)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = str(int(time.time()))
    await prepare_database(settings, args.clients, say)
    fixture = await prepare_fixture(settings, tag)
    conn = await asyncpg.connect(settings.database_url)
    await init_connection(conn)
    try:
        say(f"staff users for {args.users} simulated people")
        staff = await ensure_staff(conn, settings, args.users)
    finally:
        await conn.close()
    procs = Processes(settings, args.workers)
    loop = CampaignLoop(settings, fixture.campaign_template_id)
    try:
        host = f"http://127.0.0.1:{settings.http_port}"
        sim = f"http://127.0.0.1:{settings.simulators_port}"
        await wait_http(f"{host}/readyz", 90)
        await wait_http(f"{sim}/healthz", 60)
        async with aiohttp.ClientSession() as session:
            for channel in ("sms", "viber"):
                async with session.put(
                    f"{sim}/{channel}/sim/config",
                    json={
                        "delivered_after_ms": 200,
                        "keep_messages": int(args.event_rate * args.seconds * 2) + 100_000,
                    },
                ) as r:
                    r.raise_for_status()
        loop.start()
        say(f"campaign alone for {args.alone_seconds} s")
        alone = await loop.rate(args.alone_seconds)
        say(f"  {alone:,.0f} recipients/s")
        conn = await asyncpg.connect(settings.database_admin_url)
        try:
            await write_sample(
                conn,
                out / "sample.json",
                {
                    "operator_template_id": fixture.operator_template_id,
                    "campaign_template_id": fixture.campaign_template_id,
                    "producer_key": fixture.producer_key,
                    "event_type": EVENT_TYPE,
                    "trigger_clients": fixture.trigger_clients,
                    "campaign_id": loop.ids[-1],
                    "staff": staff,
                    "staff_password": STAFF_PASSWORD,
                },
            )
            before, started = await loop.processed(conn), time.time()
        finally:
            await conn.close()
        say(f"{args.users} users for {args.seconds} s, {args.event_rate} events/s")
        locust = asyncio.create_task(
            asyncio.to_thread(
                run_locust,
                host,
                users=args.users,
                spawn_rate=args.spawn_rate,
                seconds=args.seconds,
                processes=args.processes,
                out=out,
                env={
                    "LOADTEST_SAMPLE": str(out / "sample.json"),
                    "LOADTEST_EVENT_RATE": str(args.event_rate),
                    "LOADTEST_PACE": str(args.pace),
                },
            )
        )
        while not locust.done():
            await asyncio.sleep(1)
            procs.sample()
            if len(procs.alive()) < len(procs.procs):
                raise RuntimeError(f"a Herald process died: alive {procs.alive()}")
        code = await locust
        conn = await asyncpg.connect(settings.database_admin_url)
        try:
            during = (await loop.processed(conn) - before) / (time.time() - started)
        finally:
            await conn.close()
        await loop.stop()
        latencies, lost = await trigger_latencies(settings, fixture.rule_id, started)
    finally:
        await loop.stop()
        procs.stop()
    routes, errors = read_locust_stats(out / "locust")
    return {
        "users": args.users,
        "seconds": args.seconds,
        "locust_exit": code,
        "locust_processes": args.processes,
        "routes": routes,
        "errors": errors,
        "campaign_rate_per_s": round(during, 1),
        "campaign_alone_rate_per_s": round(alone, 1),
        "trigger_ms": {
            "p50": round(percentile(latencies, 0.5), 1) if latencies else None,
            "p99": round(percentile(latencies, 0.99), 1) if latencies else None,
        },
        "triggers": len(latencies) + lost,
        "triggers_lost": lost,
        "reports": str(out),
    }


async def sample_only(settings: Settings, path: Path) -> None:
    """The locustfile's data file for the database of ``settings`` (e.g. staging's)."""
    conn = await asyncpg.connect(settings.database_url)
    await init_connection(conn)
    try:
        await write_sample(conn, path, {})
    finally:
        await conn.close()


async def main(settings: Settings, args: argparse.Namespace) -> int:
    if args.sample_only:
        await sample_only(settings, Path(args.sample_only))
        print(json.dumps({"sample": args.sample_only}))
        return 0
    figures = await run_load(settings, args, lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(figures, ensure_ascii=False))
    return 0 if figures["locust_exit"] in (0, 1) else 1
