"""The API skeleton: health, readiness, metrics, OpenAPI, problem bodies, declared permissions."""

from __future__ import annotations

import asyncpg
import msgspec
import pytest
from aiohttp import web

from admin_api.app import (
    ENDPOINT_TABLES,
    UndeclaredRoute,
    check_routes_declared,
    init_app,
)
from admin_api.routing import AUTHENTICATED, PRODUCER, PROVIDER, PUBLIC, endpoint_of
from herald.settings import Settings


async def test_healthz(client) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}
    assert response.headers["X-Request-ID"]


async def test_readyz_checks_all_three_services(client) -> None:
    response = await client.get("/readyz")
    body = await response.json()
    assert response.status == 200, body
    assert set(body["checks"]) == {"postgresql", "rabbitmq", "redis"}
    assert all(check["ok"] for check in body["checks"].values())


async def test_readyz_reports_a_service_down_as_503_problem(
    settings: Settings, aiohttp_client
) -> None:
    # Given Redis pointed at a port where nothing listens
    broken = msgspec.structs.replace(
        settings, redis_url="redis://127.0.0.1:1/0", readiness_timeout=1.0
    )
    client = await aiohttp_client(init_app(broken))
    # When readiness is asked
    response = await client.get("/readyz")
    # Then it is a 503 problem naming Redis, and the other services still pass
    body = await response.json()
    assert response.status == 503
    assert response.content_type == "application/problem+json"
    assert body["checks"]["redis"]["ok"] is False
    assert body["checks"]["postgresql"]["ok"] is True
    assert "redis" in body["detail"]


async def test_metrics_count_requests_by_route(client) -> None:
    await client.get("/healthz")
    response = await client.get("/metrics")
    text = await response.text()
    assert response.status == 200
    assert 'herald_http_requests_total{method="GET",route="/healthz",status="200"}' in text


async def test_request_id_is_echoed_when_sane(client) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"
    response = await client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert response.headers["X-Request-ID"] != "bad id\twith spaces"


async def test_openapi_document_is_generated_from_the_routes(client) -> None:
    response = await client.get("/api/v1/openapi.json")
    doc = await response.json()
    assert doc["openapi"] == "3.1.0"
    login = doc["paths"]["/api/v1/auth/login"]["post"]
    assert login["x-permission"] == PUBLIC and login["security"] == []
    body_ref = login["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    login_schema = doc["components"]["schemas"][body_ref.rsplit("/", 1)[1]]
    assert set(login_schema["required"]) == {"login", "password"}
    users = doc["paths"]["/api/v1/users"]["get"]
    assert users["x-permission"] == "users.read"
    assert {"401", "403"} <= set(users["responses"])
    assert {p["name"] for p in users["parameters"]} == {"limit", "after_id", "cursor"}
    assert "Problem" in doc["components"]["schemas"]


def test_every_route_declares_a_permission(settings: Settings) -> None:
    app = init_app(settings)
    routes = list(app.router.routes())
    assert routes
    for route in routes:
        declared = endpoint_of(route.handler)
        assert declared is not None, (
            f"{route.method} {route.resource and route.resource.canonical} declares nothing"
        )
        assert declared.permission


def test_a_new_route_without_permission_fails(settings: Settings) -> None:
    app = init_app(settings)

    async def sneaky(request: web.Request) -> web.Response:
        return web.Response(text="no check")

    app.router.add_get("/api/v1/sneaky", sneaky)
    with pytest.raises(UndeclaredRoute, match="/api/v1/sneaky"):
        check_routes_declared(app)


async def test_every_declared_permission_exists_in_the_matrix(app_conn: asyncpg.Connection) -> None:
    known = {r["code"] for r in await app_conn.fetch("SELECT code FROM permissions")}
    declared = {ep.permission for table in ENDPOINT_TABLES for ep, _ in table.endpoints}
    assert declared - {PUBLIC, AUTHENTICATED, PROVIDER, PRODUCER} <= known


async def test_unknown_path_and_method_are_problems(client) -> None:
    response = await client.get("/api/v1/nowhere")
    assert response.status == 404
    assert response.content_type == "application/problem+json"
    assert (await response.json())["status"] == 404
    response = await client.delete("/healthz")
    assert response.status == 405
    assert response.content_type == "application/problem+json"
    assert "GET" in response.headers["Allow"]


async def test_a_crash_is_a_500_problem_without_trace(settings: Settings, aiohttp_client) -> None:
    from admin_api.routing import EndpointTable

    app = init_app(settings)
    table = EndpointTable("test")

    @table.get("/boom", permission=PUBLIC)
    async def boom(request: web.Request) -> None:
        """Always fails."""
        raise RuntimeError("secret internals /etc/passwd")

    table.add_to(app)
    client = await aiohttp_client(app)
    response = await client.get("/boom")
    body = await response.text()
    assert response.status == 500
    assert response.content_type == "application/problem+json"
    assert "secret internals" not in body and "Traceback" not in body
    assert (await response.json())["request_id"] == response.headers["X-Request-ID"]


async def test_a_statement_timeout_is_a_503_problem(settings: Settings, aiohttp_client) -> None:
    from admin_api.routing import EndpointTable
    from admin_api.typedefs import DB

    app = init_app(settings)
    table = EndpointTable("test")

    @table.get("/slow", permission=PUBLIC)
    async def slow(request: web.Request) -> None:
        """A query longer than the statement timeout."""
        async with request.app[DB].acquire() as conn:
            await conn.execute("SET LOCAL statement_timeout = 50; SELECT pg_sleep(1)")

    table.add_to(app)
    client = await aiohttp_client(app)
    response = await client.get("/slow")
    body = await response.json()
    assert response.status == 503
    assert body["type"] == "/problems/query-timeout"
    assert response.headers["Retry-After"] == "5"
