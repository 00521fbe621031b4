"""Hostile input is a 4xx problem at the door, for every route: integers beyond a column's
range, NUL characters, deep JSON, a wrong Content-Type, a multipart body without boundary."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import msgspec
import pytest
from aiohttp import web
from conftest import login_as

from admin_api import inputs
from admin_api.app import check_inputs_declared
from admin_api.routing import EndpointTable
from herald.bounds import INT32_MAX, INT64_MAX

HUGE = 27814628221853694603296768


async def _problem(response: Any, status: int = 400) -> dict[str, Any]:
    body = await response.json()
    assert response.status == status, body
    assert response.content_type == "application/problem+json"
    return body


@pytest.mark.parametrize(
    ("method", "path", "payload", "field"),
    [
        ("GET", f"/api/v1/templates?after_id={HUGE}", None, "after_id"),
        (
            "GET",
            f"/api/v1/templates/1/versions?before_version={INT32_MAX + 1}",
            None,
            "before_version",
        ),
        ("GET", f"/api/v1/templates/1/versions/{INT32_MAX + 1}", None, "version"),
        ("GET", f"/api/v1/templates/{INT64_MAX + 1}", None, "template_id"),
        ("GET", f"/api/v1/templates/{'9' * 5000}", None, "template_id"),
        ("GET", f"/api/v1/case-escalations?case_id={HUGE}", None, "case_id"),
        ("POST", "/api/v1/cases/1/merge", {"into": HUGE}, "into"),
        ("PUT", "/api/v1/campaigns/1", {"template_version": 133304331571021}, "template_version"),
        ("POST", "/api/v1/campaigns", {"template_version": INT32_MAX + 1}, "template_version"),
    ],
)
async def test_an_integer_beyond_its_column_is_a_400_naming_it(
    client, demo_users, method, path, payload, field
) -> None:
    admin = await login_as(client, "admin")
    response = await client.request(method, path, json=payload, headers=admin)
    body = await _problem(response)
    assert body["errors"][0]["field"] == field


async def test_a_cursor_at_the_documented_limit_is_answered(client, demo_users) -> None:
    # The stop list's keyset compared an int4 with the bigint cursor: 500 within the limit.
    admin = await login_as(client, "admin")
    response = await client.get(f"/api/v1/stop-lists?after_id={INT64_MAX - 1}", headers=admin)
    assert response.status == 200, await response.text()
    assert (await response.json())["items"] == []


def _integer_schemas(
    schema: Any, components: dict[str, Any], seen: set[str], path: str = ""
) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if ref:
            name = ref.rsplit("/", 1)[1]
            if name not in seen:
                found += _integer_schemas(components[name], components, seen | {name}, name)
            return found
        if schema.get("type") == "integer" or "integer" in (schema.get("type") or []):
            found.append((path, schema))
        for key, value in schema.items():
            found += _integer_schemas(value, components, seen, f"{path}.{key}")
    elif isinstance(schema, list):
        for n, value in enumerate(schema):
            found += _integer_schemas(value, components, seen, f"{path}[{n}]")
    return found


async def test_the_openapi_document_states_both_bounds_of_every_input_integer(client) -> None:
    doc = await (await client.get("/api/v1/openapi.json")).json()
    components = doc["components"]["schemas"]
    unbounded = []
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            inputs_ = [p["schema"] for p in op.get("parameters", [])]
            inputs_ += [c["schema"] for c in op.get("requestBody", {}).get("content", {}).values()]
            for schema in inputs_:
                for where, found in _integer_schemas(schema, components, set()):
                    low, high = found.get("minimum"), found.get("maximum")
                    if low is None or high is None or low < -(2**63) or high > INT64_MAX:
                        unbounded.append(f"{method.upper()} {path} {where}")
    assert not unbounded, unbounded
    versions = doc["paths"]["/api/v1/templates/{template_id}/versions/{version}"]["get"]
    assert {p["name"]: p["schema"].get("maximum") for p in versions["parameters"]} == {
        "template_id": INT64_MAX,
        "version": INT32_MAX,
    }


def test_an_unbounded_integer_stops_the_app_at_start() -> None:
    class Loose(msgspec.Struct):
        count: int
        ids: list[int] = []

    table = EndpointTable("test")

    @table.post("/loose", permission="users.read", body=Loose)
    async def loose(request: web.Request, body: Loose) -> None:
        """A route with unbounded integers."""

    app = web.Application()
    table.add_to(app)
    with pytest.raises(TypeError, match=r"Loose\.count, Loose\.ids\[\]"):
        check_inputs_declared(app)
    assert inputs.unbounded_integers(list[msgspec.Struct]) == []


@pytest.mark.parametrize(
    ("role", "method", "path", "payload", "field"),
    [
        (
            "admin",
            "POST",
            "/api/v1/case-categories",
            {"code": "x1", "name_uk": "a\u0000b", "name_en": "x"},
            "name_uk",
        ),
        (
            "admin",
            "POST",
            "/api/v1/case-classification-rules",
            {"name": "ok", "position": 1, "keywords": ["a", "\u0000"]},
            "keywords[1]",
        ),
        (
            "integration",
            "POST",
            "/api/v1/case-intake/forms",
            {"text": "\u0000", "name": "x"},
            "text",
        ),
        ("admin", "GET", "/api/v1/trigger-rules?event_type=a%00b", None, "event_type"),
        ("admin", "GET", "/api/v1/audit/contact/1%00", None, "entity_id"),
    ],
)
async def test_a_nul_character_is_a_400_naming_the_field(
    client, demo_users, role, method, path, payload, field
) -> None:
    session = await login_as(client, role)
    response = await client.request(method, path, json=payload, headers=session)
    body = await _problem(response)
    assert (body["errors"][0]["field"], body["detail"]) == (field, inputs.NUL_DETAIL)


async def test_nul_in_a_form_and_an_escaped_backslash_u0000_that_is_not_nul(
    client, demo_users
) -> None:
    integration = await login_as(client, "integration")
    response = await client.post(
        "/api/v1/cti/calls", data={"event": "start", "call_id": "a\x00"}, headers=integration
    )
    assert (await _problem(response))["errors"][0]["field"] == "call_id"
    # "\\u0000" in JSON is a backslash followed by "u0000": plain text, accepted.
    assert inputs.nul_field(b'{"a": "\\\\u0000"}') is None
    assert inputs.nul_field(b'{"a": "\\\\\\u0000"}') == "a"


async def test_multipart_without_a_boundary_is_a_400(client, demo_users) -> None:
    integration = await login_as(client, "integration")
    response = await client.post(
        "/api/v1/cti/calls",
        data=b'{"event": "start"}',
        headers={**integration, "Content-Type": "multipart/form-data"},
    )
    body = await _problem(response)
    assert body["errors"][0]["field"] == "body" and "boundary" in body["detail"]


@pytest.mark.parametrize("depth", [inputs.MAX_JSON_DEPTH + 1, 10_000, 200_000])
@pytest.mark.parametrize("path", ["/api/v1/segments", "/api/v1/segments/preview"])
async def test_json_nested_too_deep_is_a_400(client, demo_users, path, depth) -> None:
    marketer = await login_as(client, "marketer")
    nested = '{"not": ' * depth + "{}" + "}" * depth
    raw = '{"name": "deep", "kind": "static", "condition": ' + nested + "}"
    response = await client.post(
        path,
        data=io.BytesIO(raw.encode()),
        headers={**marketer, "Content-Type": "application/json"},
    )
    body = await _problem(response)
    assert "levels deep" in body["detail"]


def test_depth_is_counted_outside_strings_only() -> None:
    limit = inputs.MAX_JSON_DEPTH
    assert not inputs.too_deep(b"[" * limit + b"]" * limit)
    assert inputs.too_deep(b"[" * (limit + 1) + b"]" * (limit + 1))
    assert not inputs.too_deep(b'["' + b"[{" * 100 + b'"]')
    assert not inputs.too_deep(b'["\\"' + b"[" * 100 + b'"]')
    assert inputs.too_deep(b"[" * 100_000)  # unbalanced and deep: refused before the decoder
    assert not inputs.too_deep(b"[[]]" * 10_000)


async def test_a_json_body_in_another_content_type_is_a_415(client, demo_users) -> None:
    marketer = await login_as(client, "marketer")
    template = b'{"name": "plain", "variants": {"sms": {"uk": {"body": "x"}}}}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", ""):
        response = await client.post(
            "/api/v1/templates", data=template, headers={**marketer, "Content-Type": content_type}
        )
        body = await _problem(response, 415)
        assert "application/json" in body["detail"]
        assert response.headers["Accept-Post"] == "application/json"
    response = await client.post(
        "/api/v1/templates",
        data=template,
        headers={**marketer, "Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status != 415


async def _raw_post(client: Any, path: str, header: bytes, body: bytes) -> int:
    """The status of a POST with a header holding arbitrary bytes (no HTTP client sends those)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\n"
        + header
        + b"\r\n"
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )
    status = int((await reader.readline()).split()[1])
    writer.close()
    return status


async def test_headers_with_invalid_utf8_are_not_a_crash(client, demo_users, admin_conn) -> None:
    from herald.cli.demo import DEMO_USERS

    await admin_conn.execute(
        "INSERT INTO case_webhook_secrets (channel, secret, updated_by) "
        "VALUES ('viber', $1, 'test'), ('telegram', $1, 'test')",
        "s" * 32,
    )

    analyst = next(d for d in DEMO_USERS if d.role == "analyst")
    login = f'{{"login": "{analyst.login}", "password": "{analyst.password}"}}'.encode()
    assert await _raw_post(client, "/api/v1/auth/login", b"User-Agent: a\xffb", login) == 200
    assert (
        await _raw_post(
            client, "/api/v1/case-intake/viber", b"X-Viber-Content-Signature: a\xff\xc3\xa9", b"{}"
        )
        < 500
    )
    assert (
        await _raw_post(
            client,
            "/api/v1/case-intake/telegram",
            b"X-Telegram-Bot-Api-Secret-Token: a\xffb",
            b"{}",
        )
        < 500
    )
