"""Test isolation against the real services.

Every test that asks for ``settings`` gets its own PostgreSQL database, cloned in
~0.1 s from a template migrated once per session, and its own namespace, so its
RabbitMQ queues and Redis keys never meet another test's.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis

from crm import users
from dispatcher.topology import queue_names
from herald import clock
from herald.cli.migrate import discover, migrate
from herald.db import init_connection
from herald.settings import Settings, load_settings, with_clock_offset

_counter = itertools.count(1)


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def _maintenance_url(settings: Settings) -> str:
    return _with_database(settings.database_admin_url, "postgres")


def _load_base_settings() -> Settings:
    env = {k: v for k, v in os.environ.items() if k.startswith("HERALD_")}
    env.setdefault("HERALD_ENVIRONMENT", "test")
    env.setdefault("HERALD_LOG_FORMAT", "console")
    env.setdefault("HERALD_DB_POOL_MIN", "1")
    env.setdefault("HERALD_DB_POOL_MAX", "4")
    # Workers read an administrator's change to the rules at once (no waiting out a cache).
    env.setdefault("HERALD_RULES_CACHE_SECONDS", "0")
    # The cheapest argon2id there is: the suite hashes and verifies thousands of passwords.
    env.setdefault("HERALD_PASSWORD_HASH_TIME_COST", "1")
    env.setdefault("HERALD_PASSWORD_HASH_MEMORY_KIB", "64")
    return load_settings(env)


# The run's clock (HERALD_CLOCK_OFFSET_DAYS) is set before any test module is imported, so
# that times a module computes at import are on it too.
_BASE_SETTINGS = _load_base_settings()
clock.configure(_BASE_SETTINGS)
users.configure_hashing(
    time_cost=_BASE_SETTINGS.password_hash_time_cost,
    memory_kib=_BASE_SETTINGS.password_hash_memory_kib,
)


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return _BASE_SETTINGS


@pytest.fixture(scope="session")
async def template_database(base_settings: Settings) -> AsyncIterator[str]:
    name = f"herald_test_tpl_{os.getpid()}"
    admin = await asyncpg.connect(_maintenance_url(base_settings))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'")
        conn = await asyncpg.connect(_with_database(base_settings.database_admin_url, name))
        try:
            await migrate(conn, discover())
        finally:
            await conn.close()
        yield name
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


class _DatabaseSupply:
    """Clones of the template, one made ahead while the current test runs.

    A clone of the migrated template takes 1-2 s (hundreds of relations, fsync'd); making
    the next one in the background while a test runs, and dropping finished ones in the
    background, takes that off the suite's critical path.
    """

    def __init__(self, base: Settings, template: str) -> None:
        self.base, self.template = base, template
        self.next: asyncio.Task[str] | None = None
        self.drops: set[asyncio.Task[None]] = set()

    async def _execute(self, sql: str) -> None:
        admin = await asyncpg.connect(_maintenance_url(self.base))
        try:
            await admin.execute(sql)
        finally:
            await admin.close()

    async def _create(self) -> str:
        name = f"herald_test_{os.getpid()}_{next(_counter)}"
        await self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name

    async def take(self) -> str:
        """A fresh database of this test's own; starts making the next one."""
        name = await (self.next or asyncio.ensure_future(self._create()))
        self.next = asyncio.ensure_future(self._create())
        return name

    def drop(self, name: str, settings: Settings | None = None) -> None:
        """Drop the database (and the test's queues, when ``settings`` says whose) in the
        background."""
        task = asyncio.ensure_future(self._drop(name, settings))
        self.drops.add(task)
        task.add_done_callback(self.drops.discard)

    async def _drop(self, name: str, settings: Settings | None) -> None:
        await self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if settings is not None:
            await delete_queues(settings)

    async def close(self) -> None:
        if self.next is not None:
            self.drop(await self.next)
        await asyncio.gather(*self.drops)


@pytest.fixture(scope="session")
async def database_supply(
    base_settings: Settings, template_database: str
) -> AsyncIterator[_DatabaseSupply]:
    supply = _DatabaseSupply(base_settings, template_database)
    yield supply
    await supply.close()


@pytest.fixture(autouse=True)
def clock_offset_days(request: pytest.FixtureRequest, base_settings: Settings) -> Iterator[float]:
    """The test's clock: the run's (HERALD_CLOCK_OFFSET_DAYS), or pinned by a marker.

    ``@pytest.mark.clock(at)`` starts Herald's clock, Python's and the database's
    alike, at the aware datetime ``at`` for this test; it runs on from there.
    """
    marker = request.node.get_closest_marker("clock")
    if marker is None:
        yield base_settings.clock_offset_days
        return
    at: dt.datetime = marker.args[0]
    days = (at - dt.datetime.now(dt.UTC)).total_seconds() / 86_400
    clock.configure(msgspec.structs.replace(base_settings, clock_offset_days=days))
    try:
        yield days
    finally:
        clock.configure(base_settings)


async def delete_queues(settings: Settings) -> None:
    """Delete the durable queues a test's app or workers declared in its namespace.

    Left behind, they pile up in the broker (17 a test, tens of thousands a day) until
    RabbitMQ takes minutes to start. A broker that is down (a test restarting it) is let be.
    """
    try:
        connection = await aio_pika.connect(settings.amqp_url, timeout=5)
    except (TimeoutError, OSError, aio_pika.exceptions.AMQPError):
        return
    try:
        channel = await connection.channel()
        for shard in range(settings.shards):
            for queue in queue_names(settings, shard):
                await channel.queue_delete(queue)
        await channel.queue_delete(f"{settings.namespace}.dispatch.dead")
    except aio_pika.exceptions.AMQPError:
        pass
    finally:
        await connection.close()


@pytest.fixture
async def settings(
    base_settings: Settings, database_supply: _DatabaseSupply, clock_offset_days: float
) -> AsyncIterator[Settings]:
    """Settings pointing at a fresh migrated database and a namespace of this test's own."""
    name = await database_supply.take()
    n = name.rsplit("_", 1)[1]
    settings = with_clock_offset(
        msgspec.structs.replace(
            base_settings,
            database_url=_with_database(base_settings.database_url, name),
            database_admin_url=_with_database(base_settings.database_admin_url, name),
            namespace=f"t{os.getpid()}x{n}",
        ),
        clock_offset_days,
    )
    try:
        yield settings
    finally:
        database_supply.drop(name, settings)


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    """A Redis client; the test's namespace is emptied afterwards."""
    client = aioredis.Redis.from_url(settings.redis_url)
    yield client
    keys = [k async for k in client.scan_iter(match=f"{settings.namespace}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def admin_conn(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the owner role to this test's database."""
    conn = await asyncpg.connect(settings.database_admin_url)
    await init_connection(conn)
    yield conn
    await conn.close()


@pytest.fixture
async def app_conn(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the application role to this test's database."""
    conn = await asyncpg.connect(settings.database_url)
    await init_connection(conn)
    yield conn
    await conn.close()


@pytest.fixture
async def client(settings: Settings, aiohttp_client):
    """A test client of the admin API on this test's own database."""
    from admin_api.app import init_app

    return await aiohttp_client(init_app(settings))


@pytest.fixture
async def demo_users(settings: Settings) -> dict[str, str]:
    """The demo users (one per role) in this test's database: role -> login."""
    from crm.users import PasswordPolicy
    from herald.cli.demo import DEMO_USERS, ensure_demo_users

    conn = await asyncpg.connect(settings.database_url)
    try:
        await ensure_demo_users(conn, PasswordPolicy(settings.password_min_length))
    finally:
        await conn.close()
    return {d.role: d.login for d in DEMO_USERS}


async def login_as(client, role: str) -> dict[str, str]:
    """Log a demo user of ``role`` in; return the Authorization header to send."""
    from herald.cli.demo import DEMO_USERS

    demo = next(d for d in DEMO_USERS if d.role == role)
    response = await client.post(
        "/api/v1/auth/login", json={"login": demo.login, "password": demo.password}
    )
    assert response.status == 200, await response.text()
    return {"Authorization": "Bearer " + (await response.json())["token"]}


@pytest.fixture
async def stack(
    settings: Settings, demo_users, aiohttp_client, aiohttp_server, admin_conn: asyncpg.Connection
):
    """A whole Herald (API, simulators, a worker) for dispatch tests: see dispatch_helpers."""
    from dispatch_helpers import start_stack

    async for running in start_stack(settings, aiohttp_client, aiohttp_server, admin_conn):
        yield running


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that run a whole Herald (API, worker, simulators: the ``stack`` fixture) go to
    one xdist process, one after another (``--dist loadgroup``): side by side they starved
    each other of the two cores until receipts missed their 30 s waits."""
    for item in items:
        if "stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("stack"))
