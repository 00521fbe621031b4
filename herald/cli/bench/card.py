"""``herald bench card``: the operator's reads at full scale, through the HTTP API.

Setup (not timed): the configured database must already hold the customer's data set
(``make seed-13m``: 13 M clients, ~13.8 M accounts); the API and the simulators (the
billing service among them) are started as separate processes on ports of their own,
and the demo users are ensured. Samples (random clients, OR numbers, names, streets,
phones) are drawn with TABLESAMPLE so they spread over the whole table.

Timed, each request on its own, ``--concurrency`` operators at a time: the card by
Client_ID and by OR number, search by name, address, phone and a combined AND/OR
query, and incoming-call identification: from posting a VICIdial "ringing" event to
the agent's Server-Sent Events stream receiving the match. The last line printed is
one JSON object with p50/p95/p99 in milliseconds per figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import aiohttp
import asyncpg
import msgspec

from crm.users import PasswordPolicy
from herald.cli.bench.campaign import Processes, wait_http
from herald.cli.demo import DEMO_USERS, ensure_demo_users
from herald.settings import Settings

Say = Callable[[str], None]


def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50, p95 and p99 of ``samples_ms`` (at least two samples), rounded to 0.1 ms."""
    if len(samples_ms) < 2:
        raise ValueError("need at least two samples")
    cuts = statistics.quantiles(samples_ms, n=100, method="inclusive")
    return {"p50": round(cuts[49], 1), "p95": round(cuts[94], 1), "p99": round(cuts[98], 1)}


class Samples(msgspec.Struct):
    client_ids: list[int]
    or_numbers: list[str]
    names: list[str]
    addresses: list[str]
    phones: list[str]


_SAMPLE = """
SELECT c.id, c.last_name, c.first_name, a.or_number, a.city, a.street, a.building,
       (SELECT phone FROM contacts p WHERE p.client_id = c.id AND p.phone IS NOT NULL LIMIT 1) AS phone
FROM clients c TABLESAMPLE SYSTEM ($1) REPEATABLE ($2)
JOIN LATERAL (SELECT * FROM accounts WHERE client_id = c.id ORDER BY id LIMIT 1) a ON true
LIMIT $3
"""


async def draw_samples(conn: asyncpg.Connection, count: int, seed: int) -> Samples:
    """Random real clients: ids, OR numbers, partial names and streets, phones in local format."""
    clients = await conn.fetchval(
        "SELECT reltuples::bigint FROM pg_class WHERE relname = 'clients'"
    )
    percent = min(100.0, max(0.01, 100.0 * count * 4 / max(clients, 1)))
    rows = await conn.fetch(_SAMPLE, percent, seed, count)
    rnd = random.Random(seed)
    phones = []
    for r in rows:
        if r["phone"]:
            local = "0" + r["phone"][4:] if r["phone"].startswith("+380") else r["phone"]
            # An operator types it in any format: full local, spaced, or the last 7 digits.
            phones.append(
                rnd.choice(
                    [local, f"{local[:3]} {local[3:6]} {local[6:8]} {local[8:]}", local[-7:]]
                )
            )
    return Samples(
        client_ids=[r["id"] for r in rows],
        or_numbers=[r["or_number"] for r in rows],
        # Partial, lower-case, sometimes with the first name: as typed at the phone.
        names=[
            rnd.choice(
                [
                    r["last_name"][: max(4, len(r["last_name"]) - 2)].lower(),
                    f"{r['last_name']} {r['first_name'][:3]}",
                ]
            )
            for r in rows
        ],
        addresses=[f"{r['street'][:8]} {r['building']}".lower() for r in rows],
        phones=phones,
    )


async def _timed(
    concurrency: int,
    calls: Sequence[Callable[[], Awaitable[bool]]],
) -> tuple[list[float], int]:
    """Run ``calls`` ``concurrency`` at a time: the latency of each in milliseconds (a
    timed-out one counts at the time it took) and how many timed out."""
    latencies: list[float] = []
    timeouts = 0
    queue = list(reversed(calls))

    async def operator() -> None:
        nonlocal timeouts
        while queue:
            call = queue.pop()
            started = time.perf_counter()
            if not await call():
                timeouts += 1
            latencies.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(operator() for _ in range(concurrency)))
    return latencies, timeouts


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base
        self.timed_out: list[str] = []

    async def login(self, role: str) -> dict[str, str]:
        demo = next(d for d in DEMO_USERS if d.role == role)
        async with self.session.post(
            f"{self.base}/api/v1/auth/login", json={"login": demo.login, "password": demo.password}
        ) as r:
            r.raise_for_status()
            return {"Authorization": "Bearer " + (await r.json())["token"]}

    def get(
        self,
        path: str,
        headers: dict[str, str],
        params: dict[str, Any] | None = None,
    ) -> Callable[[], Awaitable[bool]]:
        """A timed call: True when answered, False on the API's 503 query timeout."""

        async def call() -> bool:
            async with self.session.get(self.base + path, params=params, headers=headers) as r:
                body = await r.read()
                if r.status == 503 and b"query-timeout" in body:
                    self.timed_out.append(f"{path} {params}")
                    return False
                if r.status != 200:
                    raise RuntimeError(f"GET {path} {params or ''}: {r.status} {body[:300]!r}")
                return True

        return call


async def push_latencies(
    listen: Callable[[asyncio.Event, asyncio.Queue[tuple[Any, float]]], Coroutine[Any, Any, None]],
    keys: Sequence[Any],
    act: Callable[[Any], Awaitable[None]],
    *,
    wait_s: float = 15,
) -> list[float]:
    """For each key, one at a time: ``act(key)``, then the time until ``listen`` (a stream
    reader that sets its event once subscribed and puts ``(key, perf_counter())`` on the
    queue for each push) reports that key; in milliseconds."""
    received: asyncio.Queue[tuple[Any, float]] = asyncio.Queue()
    ready = asyncio.Event()
    listener = asyncio.create_task(listen(ready, received))
    latencies = []
    try:
        await asyncio.wait_for(ready.wait(), 30)
        for key in keys:
            started = time.perf_counter()
            await act(key)
            while True:
                got, at = await asyncio.wait_for(received.get(), wait_s)
                if got == key:
                    latencies.append((at - started) * 1000)
                    break
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
            await listener
    return latencies


async def _cti_latencies(
    api: Api,
    operator: dict[str, str],
    integration: dict[str, str],
    agent: str,
    phones: Sequence[str],
    say: Say,
) -> list[float]:
    """Ringing POST -> the agent's SSE stream receives the identification, one call at a time."""

    async def listen(ready: asyncio.Event, received: asyncio.Queue[tuple[Any, float]]) -> None:
        async with api.session.get(
            f"{api.base}/api/v1/cti/stream",
            headers=operator,
            timeout=aiohttp.ClientTimeout(total=None),
        ) as r:
            r.raise_for_status()
            ready.set()
            async for line in r.content:
                if line.startswith(b"data:"):
                    event = json.loads(line[5:])
                    if "call_ref" in event:  # VICIdial's id of the call
                        received.put_nowait((event["call_ref"], time.perf_counter()))

    run = int(time.time())

    async def ring(n: int) -> None:
        async with api.session.post(
            f"{api.base}/api/v1/cti/calls",
            headers=integration,
            json={
                "event": "ringing",
                "call_id": f"bench{run}{n:06d}",
                "phone_number": phones[n],
                "user": agent,
            },
        ) as r:
            if r.status >= 300:
                raise RuntimeError(f"CTI ringing: {r.status} {await r.text()}")

    # Each call is keyed by its VICIdial id, as the push carries it.
    calls = {f"bench{run}{n:06d}": n for n in range(len(phones))}

    async def ring_by_ref(call_ref: str) -> None:
        await ring(calls[call_ref])

    latencies = await push_latencies(listen, list(calls), ring_by_ref, wait_s=10)
    say(f"  cti: {len(latencies)} calls identified")
    return latencies


async def run_card_bench(
    settings: Settings, *, requests: int, concurrency: int, seed: int, say: Say
) -> dict[str, object]:
    """Run the benchmark against the configured database; return the figures."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        accounts = await conn.fetchval("SELECT count(*) FROM accounts")
        samples = await draw_samples(conn, requests, seed)
        await ensure_demo_users(conn, PasswordPolicy(settings.password_min_length))
    finally:
        await conn.close()
    say(f"{accounts:,} accounts; {len(samples.client_ids)} sampled clients")
    procs = Processes(settings, 0, kinds=("api", "simulators"))
    base = f"http://127.0.0.1:{settings.http_port}"
    figures: dict[str, object] = {"accounts": accounts}
    try:
        await wait_http(base + "/healthz", 60)
        await wait_http(f"http://127.0.0.1:{settings.simulators_port}/healthz", 60)
        connector = aiohttp.TCPConnector(limit=concurrency + 4)
        async with aiohttp.ClientSession(connector=connector) as session:
            api = Api(session, base)
            operator = await api.login("operator_cc")
            integration = await api.login("integration")
            s = samples
            plans: dict[str, list[Callable[[], Awaitable[bool]]]] = {
                "card_by_id_ms": [api.get(f"/api/v1/clients/{c}", operator) for c in s.client_ids],
                "card_by_or_ms": [
                    api.get(f"/api/v1/accounts/by-or/{o}", operator) for o in s.or_numbers
                ],
                "search_name_ms": [
                    api.get("/api/v1/clients/search", operator, {"name": n}) for n in s.names
                ],
                "search_address_ms": [
                    api.get("/api/v1/clients/search", operator, {"address": a}) for a in s.addresses
                ],
                "search_phone_ms": [
                    api.get("/api/v1/clients/search", operator, {"phone": p}) for p in s.phones
                ],
                "search_combined_ms": [
                    api.get(
                        "/api/v1/clients/search",
                        operator,
                        {"name": n, "address": a, "match": "all" if i % 2 else "any"},
                    )
                    for i, (n, a) in enumerate(zip(s.names, s.addresses, strict=False))
                ],
            }
            # Warm-up: the first requests open pool connections and load pages.
            await _timed(concurrency, [c for plan in plans.values() for c in plan[:10]])
            for name, calls in plans.items():
                started = time.monotonic()
                latencies, timeouts = await _timed(concurrency, calls)
                figures[name] = {**percentiles(latencies), "timeouts": timeouts}
                say(
                    f"  {name}: {len(latencies)} requests in {time.monotonic() - started:.1f} s "
                    f"-> {figures[name]}"
                )
            demo = next(d for d in DEMO_USERS if d.role == "operator_cc")
            figures["cti_push_ms"] = percentiles(
                await _cti_latencies(
                    api, operator, integration, demo.login, s.phones[: min(300, len(s.phones))], say
                )
            )
    finally:
        procs.stop()
    for query in api.timed_out[:20]:
        say(f"  timed out: {query}")
    figures["requests"] = requests
    figures["concurrency"] = concurrency
    return figures


def bench_settings(settings: Settings) -> Settings:
    """The configured database, with the API and simulators on ports of the benchmark's own."""
    sim = "http://127.0.0.1:18091"
    return msgspec.structs.replace(
        settings,
        http_port=18081,
        public_base_url="http://127.0.0.1:18081",
        simulators_port=18091,
        sms_gateway_url=f"{sim}/sms",
        viber_api_url=f"{sim}/viber",
        billing_url=f"{sim}/billing",
        smtp_port=18026,
        log_level="WARNING",
    )
