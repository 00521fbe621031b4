"""Attacks through the API are refused and journalled: template bodies trying to get out of
the jinja2 sandbox, SQL in a segment condition's names and typed values. A plain mistake
(an unknown variable, a typo in an attribute) is refused without a journal entry; SQL in a
free-text value is a literal string, matched as typed, never run."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from conftest import login_as

from herald.audit import SECURITY


async def _security_journal(admin_conn: asyncpg.Connection, kind: str) -> list[asyncpg.Record]:
    return await admin_conn.fetch(
        "SELECT actor_login, action, field, new_value FROM audit_log "
        "WHERE entity_type = $1 AND entity_id = $2 ORDER BY id",
        SECURITY,
        kind,
    )


async def _refused(response: Any) -> dict[str, Any]:
    body = await response.json()
    assert response.status == 400, body
    assert response.content_type == "application/problem+json"
    return body


def _template(sms: str) -> dict[str, Any]:
    return {"name": "спроба", "topic": "debt", "variants": {"sms": {"text": sms}}}


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ first_name|attr('__class__') }}",
        "{{ first_name['__class__'] }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ self._TemplateReference__context }}",
        "{{ lipsum.__globals__['os'] }}",
        "{% include '/etc/passwd' %}",
        "{{ config.items() }}",
        "{{ 'x' * 1000000000 }}",
    ],
)
async def test_a_sandbox_escape_is_refused_and_journalled(
    client, demo_users, admin_conn: asyncpg.Connection, source: str
) -> None:
    marketer = await login_as(client, "marketer")
    body = await _refused(
        await client.post("/api/v1/templates", headers=marketer, json=_template(source))
    )
    assert body["errors"][0]["field"] == "variants.sms.text"
    [*_, entry] = await _security_journal(admin_conn, "template_sandbox")
    assert (entry["actor_login"], entry["action"], entry["field"]) == (
        "marketer",
        "refused",
        "variants.sms.text",
    )
    assert entry["new_value"]["input"] in (source, entry["new_value"]["detail"].split(": ", 1)[-1])
    # and an auditor reads it through the API
    admin = await login_as(client, "admin")
    history = await (
        await client.get("/api/v1/audit/security/template_sandbox", headers=admin)
    ).json()
    assert history["items"][0]["actor_login"] == "marketer"


async def test_a_plain_mistake_in_a_template_is_not_journalled(
    client, demo_users, admin_conn: asyncpg.Connection
) -> None:
    marketer = await login_as(client, "marketer")
    for source in ("{{ frist_name }}", "{{ first_name.upper() }}", "{{ first_name|safe }}"):
        await _refused(
            await client.post("/api/v1/templates", headers=marketer, json=_template(source))
        )
    assert await _security_journal(admin_conn, "template_sandbox") == []


@pytest.mark.parametrize(
    ("condition", "field"),
    [
        (
            {"attribute": "billing.debt; DROP TABLE clients; --", "op": "gt", "value": 0},
            "condition.attribute",
        ),
        (
            {"attribute": "billing.debt", "op": "gt 0 OR 1=1 --", "value": 0},
            "condition.op",
        ),
        (
            {"attribute": "billing.debt", "op": "gt", "value": "0 OR 1=1"},
            "condition.value",
        ),
        (
            {"attribute": "account.region", "op": "in", "value": ["UA-30", "x' OR '1'='1"]},
            "condition.value[1]",
        ),
        (
            {
                "all": [
                    {"attribute": "billing.debt", "op": "gt", "value": 0},
                    {"attribute": "client.birth_date", "op": "lt", "value": "2000-01-01'--"},
                ]
            },
            "condition.all[1].value",
        ),
    ],
)
@pytest.mark.parametrize("route", ["/api/v1/segments/preview", "/api/v1/segments"])
async def test_sql_in_a_segment_condition_is_refused_and_journalled(
    client, demo_users, admin_conn: asyncpg.Connection, condition, field, route
) -> None:
    marketer = await login_as(client, "marketer")
    payload = {"condition": condition, "name": "спроба", "kind": "static"}
    if route.endswith("preview"):
        del payload["name"], payload["kind"]
    body = await _refused(await client.post(route, headers=marketer, json=payload))
    assert body["errors"][0]["field"] == field
    [entry] = await _security_journal(admin_conn, "sql")
    assert (entry["actor_login"], entry["action"], entry["field"]) == ("marketer", "refused", field)
    assert (
        "OR" in entry["new_value"]["input"]
        or ";" in entry["new_value"]["input"]
        or ("'" in entry["new_value"]["input"])
    )
    assert await admin_conn.fetchval("SELECT to_regclass('clients') IS NOT NULL")


async def test_a_typo_is_refused_without_a_journal_entry_and_sql_in_free_text_is_literal(
    client, demo_users, admin_conn: asyncpg.Connection
) -> None:
    marketer = await login_as(client, "marketer")
    await _refused(
        await client.post(
            "/api/v1/segments/preview",
            headers=marketer,
            json={"condition": {"attribute": "billing.dept", "op": "gt", "value": 0}},
        )
    )
    # A free-text attribute takes any text: it is a bound parameter, matched literally.
    response = await client.post(
        "/api/v1/segments/preview",
        headers=marketer,
        json={
            "condition": {
                "attribute": "account.city",
                "op": "equals",
                "value": "Київ' OR '1'='1'; DROP TABLE clients; --",
            },
            "exact": True,
        },
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["count"] == 0
    assert await _security_journal(admin_conn, "sql") == []
    assert await admin_conn.fetchval("SELECT to_regclass('clients') IS NOT NULL")
