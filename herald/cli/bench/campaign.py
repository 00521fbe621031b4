"""``herald bench campaign``: one campaign through the whole pipeline, with real processes.

Setup (not timed): a database of its own (``<database>_bench``) migrated and seeded
with N realistic clients by the seeder (kept between runs with the same N), rate
limits set high so every token check runs, and the admin API (receipts), the
simulators and the workers started as separate processes, exactly as in production.
Timed: from launch until the campaign is completed, i.e. every recipient has a final
outcome and every sent message its receipt. Then every recipient is accounted for
in the database and the simulators' counts are read. The last line printed is JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import msgspec

from dispatcher.campaigns import store as campaigns
from dispatcher.campaigns.types import AllClientsAudience, CampaignSpec
from dispatcher.templating import store as template_store
from dispatcher.templating.templates import TemplateDraft, TemplateEngine, Variants
from herald.audit import SYSTEM
from herald.cli.migrate import discover, migrate
from herald.cli.seed import seed_crm
from herald.db import init_connection
from herald.settings import Settings, env_name
from providers.base import Channel
from rules import rate_limit

Say = Callable[[str], None]

_TEMPLATE = {
    "sms": {
        "text": "{{ first_name }}, борг {{ debt|money }} за ОР {{ or_number }}. "
        "Сплатіть до {{ due_date|date }}."
    },
    "viber": {
        "text": "{{ first_name }}, нагадуємо про борг {{ debt|money }} за ОР {{ or_number }}.",
        "button_text": "Сплатити",
        "button_url": "{{ payment_url }}",
    },
    "email": {
        "subject": "Борг за ОР {{ or_number }}",
        "html": "<p>{{ first_name }}, ваш борг {{ debt|money }}.</p>",
    },
}


def _database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def bench_settings(settings: Settings, *, api_port: int, sim_port: int, smtp_port: int) -> Settings:
    """The settings of every process of the run: own database, namespace and ports."""
    name = urlsplit(settings.database_admin_url).path.lstrip("/") + "_bench"
    sim = f"http://127.0.0.1:{sim_port}"
    return msgspec.structs.replace(
        settings,
        database_url=_database(settings.database_url, name),
        database_admin_url=_database(settings.database_admin_url, name),
        namespace="bench",
        http_port=api_port,
        public_base_url=f"http://127.0.0.1:{api_port}",
        simulators_port=sim_port,
        sms_gateway_url=f"{sim}/sms",
        viber_api_url=f"{sim}/viber",
        smtp_port=smtp_port,
        log_level="WARNING",
        db_pool_max=8,
    )


async def prepare_database(settings: Settings, recipients: int, say: Say) -> None:
    """Create, migrate and seed the bench database unless it already holds N clients."""
    name = urlsplit(settings.database_admin_url).path.lstrip("/")
    admin = await asyncpg.connect(_database(settings.database_admin_url, "postgres"))
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await admin.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'")
    finally:
        await admin.close()
    conn = await asyncpg.connect(settings.database_admin_url)
    try:
        await migrate(conn, discover())
        # Earlier runs' campaigns and events go; the clients stay when N matches.
        await conn.execute(
            "TRUNCATE campaigns, campaign_batches, message_events, held_messages, "
            "message_templates, message_template_versions, rate_limits CASCADE"
        )
        have = await conn.fetchval("SELECT count(*) FROM clients")
    finally:
        await conn.close()
    if have != recipients:
        say(f"seeding {recipients:,} clients into {name} (kept for later runs)")
        await seed_crm(settings, clients=recipients, seed=1, reset=True, progress=True)


async def create_campaign(settings: Settings, chain: list[str], batch_size: int) -> int:
    """Template, high rate limits, and a launched campaign to every client; returns its id."""
    conn = await asyncpg.connect(settings.database_url)
    await init_connection(conn)
    try:
        for channel in ("sms", "viber", "email"):
            await rate_limit.set_limit(
                conn, SYSTEM, channel=channel, provider=None, per_minute=10_000_000, per_hour=None
            )
        draft = TemplateDraft(name="Бенчмарк", variants=msgspec.convert(_TEMPLATE, Variants))
        template, _ = await template_store.create(
            conn, SYSTEM, TemplateEngine(), draft=draft, topic="debt", urgent=False
        )
        channels: list[Channel] = chain  # type: ignore[assignment]  # the CLI's choices
        campaign = await campaigns.create(
            conn,
            SYSTEM,
            CampaignSpec(
                name="bench",
                template_id=template.id,
                audience=AllClientsAudience(),
                channel_chain=channels,
                receipt_timeout_seconds=600,
            ),
        )
        await campaigns.launch(conn, SYSTEM, campaign.id, None)
        return campaign.id
    finally:
        await conn.close()


class Processes:
    """The API, simulators and workers of the run, and their peak memory by kind."""

    def __init__(
        self,
        settings: Settings,
        workers: int,
        kinds: tuple[str, ...] = ("api", "simulators", "worker"),
    ) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        for field in msgspec.structs.fields(settings):
            env[env_name(field.name)] = str(getattr(settings, field.name))
        env["HERALD_LOG_FORMAT"] = "console"
        run = [sys.executable, "-m", "herald"]
        commands = {
            "api": run + ["serve"],
            "simulators": run + ["simulators"],
            "worker": run + ["worker", "--processes", str(workers)],
        }
        self.kinds = {kind: commands[kind] for kind in kinds}
        self.procs = {
            kind: subprocess.Popen(cmd, env=env, start_new_session=True)
            for kind, cmd in self.kinds.items()
        }
        self.peak_rss_mb: dict[str, float] = dict.fromkeys(self.kinds, 0.0)

    def sample(self) -> None:
        """Record the RSS of each kind's process tree (for workers: the largest process)."""
        for kind, proc in self.procs.items():
            sizes = [_rss_mb(pid) for pid in _tree(proc.pid)]
            if sizes:
                self.peak_rss_mb[kind] = max(self.peak_rss_mb[kind], max(sizes))

    def alive(self) -> list[str]:
        return [k for k, p in self.procs.items() if p.poll() is None]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _tree(pid: int) -> list[int]:
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


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def wait_http(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up in {seconds} s")
            await asyncio.sleep(0.2)


async def _sim(
    session: aiohttp.ClientSession, settings: Settings, method: str, path: str, body: object = None
) -> dict[str, int]:
    url = f"http://127.0.0.1:{settings.simulators_port}{path}"
    async with session.request(method, url, json=body) as response:
        response.raise_for_status()
        return await response.json()


async def account(settings: Settings, campaign_id: int) -> dict[str, int]:
    """Every recipient's fate, from the database."""
    conn = await asyncpg.connect(settings.database_admin_url)
    try:
        row = await conn.fetchrow(
            """
            WITH audience AS (
                SELECT unnest(client_ids) AS client_id FROM campaign_batches
                WHERE campaign_id = $1 AND step = 0),
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


async def run_campaign_bench(
    base: Settings, *, recipients: int, workers: int, chain: list[str], say: Say
) -> dict[str, object]:
    """Run the benchmark; return the figures (also what the last printed line holds)."""
    settings = bench_settings(base, api_port=18080, sim_port=18090, smtp_port=18025)
    settings = msgspec.structs.replace(settings, worker_processes=workers)
    await prepare_database(settings, recipients, say)
    procs = Processes(settings, workers)
    try:
        await wait_http(f"http://127.0.0.1:{settings.http_port}/healthz", 60)
        await wait_http(f"http://127.0.0.1:{settings.simulators_port}/healthz", 60)
        async with aiohttp.ClientSession() as session:
            for channel in ("sms", "viber", "email"):
                await _sim(session, settings, "POST", f"/{channel}/sim/reset")
                await _sim(
                    session,
                    settings,
                    "PUT",
                    f"/{channel}/sim/config",
                    {
                        "delivered_after_ms": 200,
                        "read_share": 0.1,
                        "read_after_ms": 1000,
                        # about 1 in 100 phones is not on Viber: those fall back to SMS
                        "unknown_address_pattern": "13$" if channel == "viber" else None,
                    },
                )
            campaign_id = await create_campaign(settings, chain, settings.dispatch_batch_size)
            say(f"campaign {campaign_id} launched to every client; chain {' -> '.join(chain)}")
            started = time.monotonic()
            status, last = "scheduled", 0.0
            conn = await asyncpg.connect(settings.database_admin_url)
            try:
                while status not in ("completed", "stopped", "failed"):
                    await asyncio.sleep(1.0)
                    procs.sample()
                    if len(procs.alive()) < len(procs.procs):
                        raise RuntimeError(f"a process died: alive {procs.alive()}")
                    status = await conn.fetchval(
                        "SELECT status FROM campaigns WHERE id = $1", campaign_id
                    )
                    if time.monotonic() - last >= 10:
                        last = time.monotonic()
                        done = await conn.fetchval(
                            "SELECT coalesce(sum(cardinality(client_ids)), 0) FROM campaign_batches "
                            "WHERE campaign_id = $1 AND done",
                            campaign_id,
                        )
                        say(
                            f"  {time.monotonic() - started:6.0f} s  {status:<9} "
                            f"{done:>10,} recipients processed  ({done / (time.monotonic() - started):,.0f}/s)"
                        )
            finally:
                await conn.close()
            seconds = time.monotonic() - started
            stats = {c: await _sim(session, settings, "GET", f"/{c}/sim/stats") for c in chain}
    finally:
        procs.stop()
    fate = await account(settings, campaign_id)
    accepted = sum(s["accepted"] for s in stats.values())
    return {
        "recipients": fate["recipients"],
        "seconds": round(seconds, 1),
        "rate_per_s": round(fate["recipients"] / seconds, 1),
        "status": status,
        "sent": fate["sent_messages"],
        "reached": fate["reached"],
        "not_sendable": fate["not_sendable"],
        "accepted_at_simulators": accepted,
        "duplicates": sum(s["duplicates"] for s in stats.values()),
        "lost": fate["lost"] + max(0, fate["sent_messages"] - accepted),
        "per_channel": {
            c: {
                "accepted": s["accepted"],
                "duplicates": s["duplicates"],
                "permanent": s["permanent"],
            }
            for c, s in stats.items()
        },
        "workers": workers,
        "batch_size": settings.dispatch_batch_size,
        "peak_rss_mb": {k: round(v, 1) for k, v in procs.peak_rss_mb.items()},
    }


def main_json(figures: dict[str, object]) -> str:
    return json.dumps(figures, ensure_ascii=False)
