"""Liveness and readiness: is the process up, and can it reach PostgreSQL, RabbitMQ and Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from admin_api.problems import problem_response
from admin_api.routing import PUBLIC, EndpointTable
from admin_api.typedefs import AMQP, DB, REDIS, SETTINGS
from herald import db

endpoints = EndpointTable("system")


class Health(msgspec.Struct):
    status: str


class Check(msgspec.Struct):
    ok: bool
    latency_ms: float
    error: str | None = None


class Readiness(msgspec.Struct):
    status: str
    checks: dict[str, Check]


@endpoints.get("/healthz", permission=PUBLIC, response=Health)
async def healthz(request: web.Request) -> Health:
    """Liveness: the process answers (no dependency is checked)."""
    return Health(status="ok")


async def _timed(probe: Callable[[], Awaitable[object]], timeout: float) -> Check:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(probe(), timeout)
        error = None
    except TimeoutError:
        error = f"no answer within {timeout} s"
    except Exception as exc:  # any failure of a dependency means "not ready", with its reason
        error = f"{exc.__class__.__name__}: {exc}"[:300]
    return Check(
        ok=error is None, latency_ms=round((time.perf_counter() - started) * 1000, 2), error=error
    )


@endpoints.get("/readyz", permission=PUBLIC, response=Readiness, errors=(503,))
async def readyz(request: web.Request) -> Readiness | web.Response:
    """Readiness: PostgreSQL, RabbitMQ and Redis each answer a round trip."""
    app = request.app
    timeout = app[SETTINGS].readiness_timeout

    async def postgres() -> None:
        async with app[DB].acquire(timeout=timeout) as conn:
            await db.schema_version(conn)

    async def rabbitmq() -> None:
        channel = await app[AMQP].connection.channel()
        await channel.close()

    async def redis() -> None:
        await app[REDIS].ping()

    names = ("postgresql", "rabbitmq", "redis")
    results = await asyncio.gather(*(_timed(p, timeout) for p in (postgres, rabbitmq, redis)))
    checks = dict(zip(names, results, strict=True))
    if all(c.ok for c in results):
        return Readiness(status="ready", checks=checks)
    down = ", ".join(n for n, c in checks.items() if not c.ok)
    return problem_response(
        request,
        503,
        code="not-ready",
        detail=f"not reachable: {down}",
        checks=msgspec.to_builtins(checks),
    )
