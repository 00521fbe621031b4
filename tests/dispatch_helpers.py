"""A whole Herald for dispatch tests: admin API, simulators posting receipts to it, a worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import asyncpg
import msgspec
from aiohttp import ClientSession
from conftest import login_as
from sim_helpers import bound_socket, start_simulators

from admin_api.app import init_app
from dispatcher import worker
from herald.settings import Settings

TOKEN = "e2e-provider-token"
TEMPLATE = {
    "name": "Нагадування про борг",
    "topic": "debt",
    "variants": {
        "sms": {"text": "{{ first_name }}, борг {{ debt|money }} за ОР {{ or_number }}."},
        "viber": {
            "text": "{{ first_name }}, сплатіть {{ debt|money }}.",
            "button_text": "Сплатити",
            "button_url": "{{ payment_url }}",
        },
        "email": {
            "subject": "Борг за ОР {{ or_number }}",
            "html": "<p>{{ first_name }}, ваш борг {{ debt|money }}.</p>",
        },
    },
}


async def make_clients(
    conn: asyncpg.Connection,
    n: int,
    *,
    region: str = "UA-32",
    phone: bool = True,
    email: bool = True,
    start: int = 1,
) -> list[int]:
    """n clients with one account, one owner contact and a billing snapshot each."""
    ids = list(range(start, start + n))
    await conn.execute(
        """
        INSERT INTO clients (id, last_name, first_name, middle_name)
        SELECT i, 'Коваленко', 'Олена', 'Петрівна' FROM unnest($1::bigint[]) i;
        """,
        ids,
    )
    await conn.execute(
        """
        INSERT INTO accounts (id, client_id, or_number, eic_code, region_code, city, street,
                              building, consumer_type, tariff_code, opened_at)
        SELECT i, i, lpad(i::text, 10, '0'), '56XS' || lpad(i::text, 11, '0') || 'A', $2,
               'Київ', 'вул. Хрещатик', '1', 'household', 'household_fixed', '2020-01-01'
        FROM unnest($1::bigint[]) i
        """,
        ids,
        region,
    )
    await conn.execute(
        """
        INSERT INTO contacts (id, client_id, first_name, phone, email)
        SELECT i, i, 'Олена', CASE WHEN $2 THEN '+38050' || lpad(i::text, 7, '0') END,
               CASE WHEN $3 THEN 'client' || i || '@example.com' END
        FROM unnest($1::bigint[]) i
        """,
        ids,
        phone,
        email,
    )
    await conn.execute(
        "INSERT INTO account_contacts (account_id, contact_id, role) "
        "SELECT i, i, 'owner' FROM unnest($1::bigint[]) i",
        ids,
    )
    await conn.execute(
        "INSERT INTO billing_snapshots (account_id, balance, debt, fetched_at) "
        "SELECT i, -120.50, 120.50, herald_now() FROM unnest($1::bigint[]) i",
        ids,
    )
    return ids


class Stack:
    """Handles to a running Herald: API client calls as the admin, simulators, the database."""

    def __init__(
        self,
        settings: Settings,
        api: Any,
        sim_url: str,
        sim_app: Any,
        headers: dict[str, str],
        conn: asyncpg.Connection,
    ) -> None:
        self.settings = settings
        self.api = api
        self.sim_url = sim_url
        self.sim_app = sim_app
        self.headers = headers
        self.conn = conn
        self.worker: asyncio.Task[None] | None = None
        self.stop: asyncio.Event | None = None

    async def call(self, method: str, path: str, json: object = None, expect: int = 200) -> Any:
        response = await self.api.request(method, path, json=json, headers=self.headers)
        body = await response.json() if response.content_length != 0 else None
        assert response.status == expect, body
        return body

    async def sim(self, method: str, path: str, json: object = None) -> Any:
        async with (
            ClientSession() as session,
            session.request(method, self.sim_url + path, json=json) as response,
        ):
            assert response.status == 200, await response.text()
            return await response.json()

    async def configure(self, channel: str, **patch: object) -> None:
        await self.sim("PUT", f"/{channel}/sim/config", patch)

    async def sim_stats(self, channel: str) -> dict[str, int]:
        return await self.sim("GET", f"/{channel}/sim/stats")

    async def template(self, **changes: object) -> int:
        body = {**TEMPLATE, **changes}
        return int((await self.call("POST", "/api/v1/templates", body, 201))["template"]["id"])

    async def campaign(
        self,
        client_ids: Sequence[int],
        *,
        chain: Sequence[str] = ("sms",),
        template_id: int | None = None,
        **extra: object,
    ) -> int:
        template_id = template_id or await self.template()
        body = {
            "name": "Тестова розсилка",
            "template_id": template_id,
            "audience": {"kind": "clients", "client_ids": list(client_ids)},
            "channel_chain": list(chain),
            **extra,
        }
        return int((await self.call("POST", "/api/v1/campaigns", body, 201))["id"])

    async def launch(self, campaign_id: int) -> None:
        await self.call("POST", f"/api/v1/campaigns/{campaign_id}/launch", {})

    async def stats(self, campaign_id: int) -> dict[str, Any]:
        return await self.call("GET", f"/api/v1/campaigns/{campaign_id}/stats")

    async def wait(
        self, condition: Callable[[dict[str, Any]], bool], campaign_id: int, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Poll the campaign's stats until ``condition`` holds; fail after ``timeout``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            stats = await self.stats(campaign_id)
            if condition(stats):
                return stats
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"campaign {campaign_id} stats never matched: {stats}")
            await asyncio.sleep(0.1)

    def start_worker(self) -> None:
        self.stop = asyncio.Event()
        self.worker = asyncio.create_task(worker.run_worker(self.settings, 0, 1, self.stop))

    async def stop_worker(self) -> None:
        if self.worker is not None and self.stop is not None:
            self.stop.set()
            await self.worker
            self.worker = None


def counter(stats: dict[str, Any], name: str) -> int:
    return int(stats["counters"].get(name, 0))


async def start_stack(
    settings: Settings, aiohttp_client, aiohttp_server, admin_conn: asyncpg.Connection
) -> AsyncIterator[Stack]:
    """Admin API + simulators + a worker on this test's database and namespace."""
    # The SMTP sink's port is taken first (held, so no parallel test takes it meanwhile):
    # the API sends e-mail replies itself.
    smtp_sock = bound_socket()
    smtp_port = int(smtp_sock.getsockname()[1])
    settings = msgspec.structs.replace(
        settings,
        provider_api_token=TOKEN,
        shards=2,
        dispatch_batch_size=100,
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
    )
    api = await aiohttp_client(init_app(settings))
    public = str(api.make_url("")).rstrip("/")
    settings, sim_server, sim_app, smtp = await start_simulators(
        msgspec.structs.replace(settings, public_base_url=public), aiohttp_server, smtp_sock
    )
    headers = await login_as(api, "admin")
    result = Stack(
        settings, api, str(sim_server.make_url("")).rstrip("/"), sim_app, headers, admin_conn
    )
    fast = {"delivered_after_ms": 0, "read_after_ms": 0, "read_share": 0.0, "receipt_window_ms": 20}
    for channel in ("sms", "viber", "email"):
        await result.configure(channel, **fast)
    result.start_worker()
    yield result
    await result.stop_worker()
    smtp.close()
    await smtp.wait_closed()
    # (the settings fixture deletes the test's queues afterwards)
