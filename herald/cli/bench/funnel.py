"""``herald bench funnel``: the live campaign page against the database, and its cost.

Setup (not timed): a database of its own (``<database>_funnel``) migrated and seeded
with N clients (kept between runs with the same N), the demo users, and the admin API,
the simulators and the workers as separate processes (as ``herald bench campaign``).

Then the same campaign to every client runs twice, the campaign tables emptied before
each: once with nobody watching, once with the campaign's live page open, i.e. a
logged-in session holding the tab's stream ``/ui/live`` (the funnel's only feed) after
loading the page and its throughput series. In both runs a sampler counts the
campaign's ``sent`` events in PostgreSQL every ``--sample`` seconds (the truth).

- **funnel delay**: at every database sample while the campaign runs, how long the
  figure the page shows (the last ``sent`` of the stream) has been behind the database:
  0 when it is not behind, else the time since the database first passed it (to the
  sampling resolution). p50 / p95 / p99 / max.
- **slowdown**: the watched runs' mean duration against the unwatched ones' (running to
  completed, as the database recorded them), in per cent; ``--rounds`` pairs, alternated.

The last line printed is JSON.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import msgspec
import redis.asyncio as aioredis

from crm.users import PasswordPolicy
from herald.cli.bench.campaign import (
    Processes,
    Say,
    _database,
    _sim,
    bench_settings,
    create_campaign,
    prepare_database,
    wait_http,
)
from herald.cli.demo import DEMO_USERS, ensure_demo_users
from herald.db import init_connection
from herald.settings import Settings

FINAL = ("completed", "stopped", "failed")


def funnel_settings(base: Settings) -> Settings:
    """Own database, namespace and ports, so as not to meet ``herald bench campaign``."""
    settings = bench_settings(base, api_port=18180, sim_port=18190, smtp_port=18125)
    name = urlsplit(base.database_admin_url).path.lstrip("/") + "_funnel"
    return msgspec.structs.replace(
        settings,
        database_url=_database(settings.database_url, name),
        database_admin_url=_database(settings.database_admin_url, name),
        namespace="benchfunnel",
    )


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def delays(truth: list[tuple[float, int]], shown: list[tuple[float, int]]) -> list[float]:
    """At each database sample (time, count): how long the figure shown then had been
    behind the database (0 when it was not)."""
    out: list[float] = []
    j = -1
    for t, count in truth:
        while j + 1 < len(shown) and shown[j + 1][0] <= t:
            j += 1
        value = shown[j][1] if j >= 0 else 0
        if value >= count:
            out.append(0.0)
            continue
        passed = next(tt for tt, c in truth if c > value)  # the database first went past it
        out.append(max(0.0, t - passed))
    return out


async def _reset(settings: Settings) -> None:
    """Empty the campaign tables and the namespace's Redis keys between the two runs."""
    conn = await asyncpg.connect(settings.database_admin_url)
    try:
        await conn.execute(
            "TRUNCATE campaigns, campaign_batches, message_events, held_messages, "
            "message_templates, message_template_versions, rate_limits CASCADE"
        )
        await conn.execute("VACUUM ANALYZE message_events")
    finally:
        await conn.close()
    redis = aioredis.from_url(settings.redis_url)
    try:
        async for key in redis.scan_iter(match=f"{settings.namespace}:campaign:*", count=1000):
            await redis.delete(key)
    finally:
        await redis.aclose()


async def _watch(
    settings: Settings, campaign_id: int, shown: list[tuple[float, int]], ready: asyncio.Event
) -> None:
    """A marketer with the campaign's page open: log in, load the page and its series,
    hold the tab's stream and note each ``sent`` figure of this campaign it receives."""
    user = next(d for d in DEMO_USERS if d.role == "marketer")
    base = f"http://127.0.0.1:{settings.http_port}"
    # unsafe: keep the session cookie of a server addressed by its IP (127.0.0.1)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.post(
            base + "/ui/login",
            data={"login": user.login, "password": user.password},
            headers={"Origin": base},
            allow_redirects=False,
        ) as response:
            if response.status != 303:
                raise RuntimeError(f"login failed: {response.status} {await response.text()}")
        for path in (f"/ui/campaigns/{campaign_id}", f"/api/v1/campaigns/{campaign_id}/series"):
            async with session.get(base + path) as response:
                response.raise_for_status()
                await response.read()
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with session.get(base + "/ui/live", timeout=timeout) as response:
            ready.set()
            event = ""
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event == "campaign":
                    body = json.loads(line[5:])
                    mine = body["c"].get(str(campaign_id))
                    if mine is not None:
                        shown.append((time.time(), int(mine["counters"].get("sent", 0))))
                        if mine["status"] in FINAL:
                            return


async def _one_run(
    settings: Settings,
    procs: Processes,
    *,
    watched: bool,
    chain: list[str],
    sample: float,
    say: Say,
) -> dict[str, Any]:
    await _reset(settings)
    async with aiohttp.ClientSession() as session:
        for channel in ("sms", "viber", "email"):
            await _sim(session, settings, "POST", f"/{channel}/sim/reset")
            await _sim(
                session,
                settings,
                "PUT",
                f"/{channel}/sim/config",
                {"delivered_after_ms": 200, "read_share": 0.1, "read_after_ms": 1000},
            )
    campaign_id = await create_campaign(settings, chain, settings.dispatch_batch_size)
    shown: list[tuple[float, int]] = []
    truth: list[tuple[float, int]] = []
    watcher = None
    if watched:
        ready = asyncio.Event()
        watcher = asyncio.create_task(_watch(settings, campaign_id, shown, ready))
        await asyncio.wait_for(ready.wait(), 30)
    conn = await asyncpg.connect(settings.database_admin_url)
    await init_connection(conn)
    started = time.monotonic()
    status = "scheduled"
    try:
        while status not in FINAL:
            at = time.time()  # the count is the database as the query found it, at its start
            count = await conn.fetchval(
                "SELECT count(*) FROM message_events WHERE campaign_id = $1 AND status = 'sent'",
                campaign_id,
            )
            truth.append((at, int(count)))
            status = await conn.fetchval("SELECT status FROM campaigns WHERE id = $1", campaign_id)
            procs.sample()
            if len(procs.alive()) < len(procs.procs):
                raise RuntimeError(f"a process died: alive {procs.alive()}")
            await asyncio.sleep(sample)
        row = await conn.fetchrow(
            "SELECT audience_size, extract(epoch FROM finished_at - launched_at) AS s "
            "FROM campaigns WHERE id = $1",
            campaign_id,
        )
        recipients = row["audience_size"]
        # From running to completed, as the database recorded them: not the scheduler's
        # pick-up of the launch (up to a tick), which is no part of the sending.
        seconds = float(row["s"] or time.monotonic() - started)
    finally:
        await conn.close()
    if watcher is not None:
        try:
            await asyncio.wait_for(watcher, 15)
        except TimeoutError:
            watcher.cancel()
    say(
        f"  {'watched' if watched else 'unwatched'}: {recipients:,} recipients in {seconds:.1f} s "
        f"({recipients / seconds:,.0f}/s), {status}"
    )
    found = delays([s for s in truth if s[1] > 0], shown) if watched else []
    return {
        "seconds": round(seconds, 1),
        "rate_per_s": round(recipients / seconds, 1),
        "status": status,
        "db_samples": len(truth),
        "stream_events": len(shown),
        "delay_s": found,
    }


async def run_funnel_bench(
    base: Settings,
    *,
    recipients: int,
    workers: int,
    chain: list[str],
    sample: float,
    rounds: int,
    say: Say,
) -> dict[str, object]:
    settings = funnel_settings(base)
    settings = msgspec.structs.replace(settings, worker_processes=workers)
    await prepare_database(settings, recipients, say)
    conn = await asyncpg.connect(settings.database_admin_url)
    try:
        await ensure_demo_users(conn, PasswordPolicy(settings.password_min_length))
    finally:
        await conn.close()
    procs = Processes(settings, workers)
    try:
        await wait_http(f"http://127.0.0.1:{settings.http_port}/healthz", 60)
        await wait_http(f"http://127.0.0.1:{settings.simulators_port}/healthz", 60)
        runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
        for n in range(rounds):
            for watch in (False, True):  # alternated, so that drift hits both alike
                say(f"round {n + 1}: {'the live page open' if watch else 'nobody watching'}")
                runs[watch].append(
                    await _one_run(
                        settings, procs, watched=watch, chain=chain, sample=sample, say=say
                    )
                )
    finally:
        procs.stop()
    found = [d for r in runs[True] for d in r.pop("delay_s")]
    for r in runs[False]:
        r.pop("delay_s")
    plain_s = sum(r["seconds"] for r in runs[False]) / rounds
    watched_s = sum(r["seconds"] for r in runs[True]) / rounds
    slowdown = (watched_s - plain_s) / plain_s * 100
    return {
        "recipients": recipients,
        "chain": chain,
        "workers": workers,
        "sample_s": sample,
        "funnel_delay_s": {
            "p50": round(percentile(found, 50), 2),
            "p95": round(percentile(found, 95), 2),
            "p99": round(percentile(found, 99), 2),
            "max": round(max(found, default=0.0), 2),
            "samples": len(found),
        },
        "rounds": rounds,
        "unwatched": runs[False],
        "watched": runs[True],
        "unwatched_mean_s": round(plain_s, 1),
        "watched_mean_s": round(watched_s, 1),
        "slowdown_pct": round(slowdown, 1),
        "target": {"funnel_delay_p99_s": 2.0, "slowdown_pct": 5.0},
    }
