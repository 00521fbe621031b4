"""Segments through the admin API: catalogue, validation, preview, members, export, set operations."""

from __future__ import annotations

import csv
import io
import random
from typing import Any

import asyncpg
import pytest
from conftest import login_as
from test_segment_compiler import load_population, random_tree

from herald.cli import build_parser

DEBT_KYIV = {
    "all": [
        {"attribute": "account.region", "op": "in", "value": ["UA-30", "UA-32"]},
        {"attribute": "billing.debt", "op": "gt", "value": 0},
        {"attribute": "billing.last_payment_at", "op": "older_than_days", "value": 60},
    ]
}


async def _json(response: Any, status: int) -> Any:
    body = await response.json()
    assert response.status == status, body
    return body


async def _bad(response: Any, field: str, status: int = 400) -> dict[str, Any]:
    body = await _json(response, status)
    if field:
        assert field in [e["field"] for e in body.get("errors", [])], body
    return body


async def _sql_ids(conn: asyncpg.Connection, where: str) -> set[int]:
    return {
        r["client_id"]
        for r in await conn.fetch(
            "SELECT DISTINCT a.client_id FROM accounts a LEFT JOIN billing_snapshots b ON b.account_id = a.id "
            f"WHERE {where}"
        )
    }


async def test_catalogue_and_permissions(client, demo_users) -> None:
    analyst = await login_as(client, "analyst")
    items = (await _json(await client.get("/api/v1/segments/attributes", headers=analyst), 200))[
        "items"
    ]
    by_code = {a["code"]: a for a in items}
    # Built-ins of every source and type, with their operators and values
    assert {
        "account.region",
        "account.registers",
        "billing.debt",
        "billing.last_payment_at",
        "client.birth_date",
        "consent.opted_in",
    } <= set(by_code)
    assert (
        len(by_code["account.region"]["values"]) == 26
        and by_code["account.region"]["type"] == "enum"
    )
    assert by_code["account.registers"]["type"] == "string_list"
    assert "older_than_days" in by_code["billing.last_payment_at"]["operators"]
    assert [q["name"] for q in by_code["consent.opted_in"]["qualifiers"]] == ["channel", "topic"]
    assert {a["source"] for a in items} >= {
        "client",
        "account",
        "billing",
        "consent",
        "channel_usage",
    }
    assert by_code["usage.last_at"]["qualifiers"] == [
        {"name": "channel", "values": ["cabinet", "app", "shop", "chatbot"]}
    ]
    # Reading is for analysts too; changing is for marketers and admins; operators see nothing
    body = {"name": "Борг", "kind": "static", "condition": DEBT_KYIV}
    assert (await client.post("/api/v1/segments", json=body, headers=analyst)).status == 403
    operator = await login_as(client, "operator_cc")
    assert (await client.get("/api/v1/segments", headers=operator)).status == 403
    marketer = await login_as(client, "marketer")
    assert (await client.post("/api/v1/segments", json=body, headers=marketer)).status == 201


async def test_validation_errors_name_the_path(client, demo_users) -> None:
    marketer = await login_as(client, "marketer")

    async def create(condition: Any, **extra: Any) -> Any:
        return await client.post(
            "/api/v1/segments",
            headers=marketer,
            json={"name": "x", "kind": "dynamic", "condition": condition, **extra},
        )

    bad_value = {
        "all": [
            DEBT_KYIV["all"][0],
            DEBT_KYIV["all"][1],
            {"attribute": "billing.last_payment_at", "op": "older_than_days", "value": "60"},
        ]
    }
    body = await _bad(await create(bad_value), "condition.all[2].value")
    assert body["status"] == 400
    await _bad(
        await create({"attribute": "billing.nothing", "op": "gt", "value": 1}),
        "condition.attribute",
    )
    await _bad(
        await create({"any": [{"attribute": "billing.debt", "op": "like", "value": 1}]}),
        "condition.any[0].op",
    )
    await _bad(
        await create({"not": {"attribute": "account.region", "op": "equals", "value": "XX"}}),
        "condition.not.value",
    )
    await _bad(await create([1, 2]), "condition")
    await _bad(await create(DEBT_KYIV, kind="sometimes"), "kind")
    await _bad(await create(DEBT_KYIV, name=""), "name")
    await _bad(
        await client.post("/api/v1/segments/preview", headers=marketer, json={"condition": {}}),
        "condition",
    )
    await _bad(await client.get("/api/v1/segments/abc", headers=marketer), "segment_id")
    await _bad(await client.get("/api/v1/segments/99", headers=marketer), "", 404)
    await _bad(
        await client.post(
            "/api/v1/segments/99/combine", headers=marketer, json={"op": "join", "other": 1}
        ),
        "op",
    )


async def test_preview_member_list_export_and_static_snapshot(
    client, demo_users, app_conn: asyncpg.Connection
) -> None:
    await load_population(app_conn, n=300)
    marketer = await login_as(client, "marketer")
    want = await _sql_ids(
        app_conn,
        "a.region_code IN ('UA-30', 'UA-32') AND b.debt > 0 AND "
        "b.last_payment_at < (herald_now() AT TIME ZONE 'Europe/Kyiv')::date - 60",
    )
    assert len(want) > 3
    # The preview counts exactly what the segment will hold
    preview = await _json(
        await client.post(
            "/api/v1/segments/preview", headers=marketer, json={"condition": DEBT_KYIV}
        ),
        200,
    )
    assert (preview["count"], preview["exact"]) == (len(want), True)
    segment = await _json(
        await client.post(
            "/api/v1/segments",
            headers=marketer,
            json={"name": "Борг у Києві", "kind": "static", "condition": DEBT_KYIV},
        ),
        201,
    )
    assert segment["member_count"] == len(want) and segment["materialised_at"]
    sid = segment["id"]
    # Members come in pages, in client id order, without overlap
    pages: list[int] = []
    after = 0
    while True:
        page = await _json(
            await client.get(
                f"/api/v1/segments/{sid}/members",
                params={"after_client_id": after, "limit": 2},
                headers=marketer,
            ),
            200,
        )
        pages += page["client_ids"]
        if page["next_after_client_id"] is None:
            break
        after = page["next_after_client_id"]
    assert pages == sorted(want)
    # The export is the same list as CSV
    response = await client.get(f"/api/v1/segments/{sid}/export", headers=marketer)
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(await response.text())))
    assert rows[0] == ["client_id"] and [int(r[0]) for r in rows[1:]] == sorted(want)
    # A static segment does not follow the data (also not through the refresh duty:
    # test_segment_refresh) ...
    first = sorted(want)[0]
    await app_conn.execute(
        "UPDATE billing_snapshots SET debt = 0 WHERE account_id IN "
        "(SELECT id FROM accounts WHERE client_id = $1)",
        first,
    )
    same = await _json(await client.get(f"/api/v1/segments/{sid}", headers=marketer), 200)
    assert same["member_count"] == len(want)
    # ... until it is refreshed on request, which takes a new snapshot
    refreshed = await _json(
        await client.post(f"/api/v1/segments/{sid}/refresh", headers=marketer), 200
    )
    assert refreshed["member_count"] == len(want) - 1
    journal = await _json(
        await client.get(f"/api/v1/audit/segment/{sid}", headers=await login_as(client, "admin")),
        200,
    )
    assert [e["action"] for e in journal["items"]][:2] in (
        ["refresh", "create"],
        ["create", "refresh"],
    )


async def test_set_operations(client, demo_users, app_conn: asyncpg.Connection) -> None:
    await load_population(app_conn, n=200)
    marketer = await login_as(client, "marketer")
    kyiv = {"attribute": "account.region", "op": "equals", "value": "UA-30"}
    debt = {"attribute": "billing.debt", "op": "gt", "value": 100}
    a = await _json(
        await client.post(
            "/api/v1/segments",
            headers=marketer,
            json={"name": "Київ", "kind": "static", "condition": kyiv},
        ),
        201,
    )
    b = await _json(
        await client.post(
            "/api/v1/segments",
            headers=marketer,
            json={"name": "Борг", "kind": "dynamic", "condition": debt},
        ),
        201,
    )
    in_a = await _sql_ids(app_conn, "a.region_code = 'UA-30'")
    in_b = await _sql_ids(app_conn, "b.debt > 100")
    assert in_a & in_b and in_a - in_b and in_b - in_a
    expected = {"union": in_a | in_b, "intersection": in_a & in_b, "exclusion": in_a - in_b}
    for op, want in expected.items():
        made = await _json(
            await client.post(
                f"/api/v1/segments/{a['id']}/combine",
                headers=marketer,
                json={"op": op, "other": b["id"]},
            ),
            201,
        )
        assert made["kind"] == "static" and made["origin"] == {
            "op": op,
            "left": a["id"],
            "right": b["id"],
        }
        assert made["member_count"] == len(want), op
        page = await _json(
            await client.get(
                f"/api/v1/segments/{made['id']}/members", params={"limit": 10000}, headers=marketer
            ),
            200,
        )
        assert page["client_ids"] == sorted(want), op
    # A made segment keeps its origin: no condition can be set on it
    await _bad(
        await client.patch(
            f"/api/v1/segments/{made['id']}", headers=marketer, json={"condition": kyiv}
        ),
        "",
        409,
    )
    await _bad(
        await client.post(
            f"/api/v1/segments/{a['id']}/combine",
            headers=marketer,
            json={"op": "union", "other": 999},
        ),
        "other",
    )
    await _bad(
        await client.post(
            "/api/v1/segments/999/combine", headers=marketer, json={"op": "union", "other": a["id"]}
        ),
        "",
        404,
    )


async def test_update_delete_and_stop_list_by_segment(
    client, demo_users, app_conn: asyncpg.Connection
) -> None:
    await load_population(app_conn, n=100)
    marketer = await login_as(client, "marketer")
    sid = (
        await _json(
            await client.post(
                "/api/v1/segments",
                headers=marketer,
                json={
                    "name": "Львів",
                    "kind": "dynamic",
                    "condition": {"attribute": "account.region", "op": "equals", "value": "UA-46"},
                },
            ),
            201,
        )
    )["id"]
    # A new condition materialises the members again
    changed = await _json(
        await client.patch(
            f"/api/v1/segments/{sid}",
            headers=marketer,
            json={
                "name": "Одеса",
                "condition": {"attribute": "account.region", "op": "equals", "value": "UA-51"},
            },
        ),
        200,
    )
    assert changed["name"] == "Одеса"
    assert changed["member_count"] == len(await _sql_ids(app_conn, "a.region_code = 'UA-51'"))
    # A stop list may now name a segment (an unknown one is a 400) ...
    await _bad(
        await client.post(
            "/api/v1/stop-lists", headers=marketer, json={"reason": "Пілот", "segment_id": 12345}
        ),
        "segment_id",
    )
    entry = await _json(
        await client.post(
            "/api/v1/stop-lists",
            headers=marketer,
            json={"reason": "Пілот", "segment_id": sid, "topics": ["marketing"]},
        ),
        201,
    )
    # ... and the segment cannot be deleted while the entry uses it
    await _bad(await client.delete(f"/api/v1/segments/{sid}", headers=marketer), "", 409)
    assert (
        await client.delete(f"/api/v1/stop-lists/{entry['id']}", headers=marketer)
    ).status == 204
    assert (await client.delete(f"/api/v1/segments/{sid}", headers=marketer)).status == 204
    assert (
        await app_conn.fetchval("SELECT count(*) FROM segment_members WHERE segment_id = $1", sid)
        == 0
    )
    await _bad(await client.get(f"/api/v1/segments/{sid}", headers=marketer), "", 404)


async def test_external_attributes_through_the_api(
    client, demo_users, app_conn: asyncpg.Connection
) -> None:
    await load_population(app_conn, n=20)
    marketer = await login_as(client, "marketer")
    declared = await _json(
        await client.post(
            "/api/v1/segments/attributes",
            headers=marketer,
            json={
                "code": "ext.kub.app_logins",
                "label_uk": "Входи в застосунок",
                "label_en": "App logins",
                "type": "number",
            },
        ),
        201,
    )
    assert declared["source"] == "external" and "gt" in declared["operators"]
    await _bad(
        await client.post(
            "/api/v1/segments/attributes",
            headers=marketer,
            json={"code": "ext.kub.app_logins", "label_uk": "x", "label_en": "x", "type": "number"},
        ),
        "",
        409,
    )
    await _bad(
        await client.post(
            "/api/v1/segments/attributes",
            headers=marketer,
            json={"code": "account.hack", "label_uk": "x", "label_en": "x", "type": "number"},
        ),
        "code",
    )
    url = "/api/v1/segments/attributes/ext.kub.app_logins/values"
    done = await _json(
        await client.put(
            url,
            headers=marketer,
            json={
                "values": [
                    {"client_id": 1, "value": 12},
                    {"client_id": 2, "value": 3},
                    {"client_id": 3, "value": 40.5},
                ]
            },
        ),
        200,
    )
    assert (done["set"], done["removed"]) == (3, 0)
    await _bad(
        await client.put(
            url,
            headers=marketer,
            json={"values": [{"client_id": 1, "value": 1}, {"client_id": 2, "value": "many"}]},
        ),
        "values[1].value",
    )
    await _bad(
        await client.put(url, headers=marketer, json={"values": [{"client_id": 9999, "value": 1}]}),
        "values",
    )
    await _bad(
        await client.put(
            "/api/v1/segments/attributes/billing.debt/values",
            headers=marketer,
            json={"values": [{"client_id": 1, "value": 1}]},
        ),
        "code",
    )
    preview = await _json(
        await client.post(
            "/api/v1/segments/preview",
            headers=marketer,
            json={"condition": {"attribute": "ext.kub.app_logins", "op": "gte", "value": 10}},
        ),
        200,
    )
    assert preview["count"] == 2
    removed = await _json(
        await client.put(url, headers=marketer, json={"values": [{"client_id": 3, "value": None}]}),
        200,
    )
    assert removed["removed"] == 1
    preview = await _json(
        await client.post(
            "/api/v1/segments/preview",
            headers=marketer,
            json={"condition": {"attribute": "ext.kub.app_logins", "op": "gte", "value": 10}},
        ),
        200,
    )
    assert preview["count"] == 1


async def test_hostile_conditions_never_crash_the_api(
    client, demo_users, app_conn: asyncpg.Connection
) -> None:
    await load_population(app_conn, n=30)
    marketer = await login_as(client, "marketer")
    from crm.segments import catalogue as catalogue_mod

    catalogue = await catalogue_mod.load(app_conn)
    rng = random.Random(99)
    statuses: dict[int, int] = {}
    for _ in range(150):
        tree = random_tree(catalogue, rng, hostile=True)
        response = await client.post(
            "/api/v1/segments/preview", headers=marketer, json={"condition": tree}
        )
        statuses[response.status] = statuses.get(response.status, 0) + 1
        body = await response.json()
        if response.status == 400:
            field = body["errors"][0]["field"]
            # NaN and infinities are not JSON: the body itself is refused.
            assert field.startswith("condition") or (
                field == "body" and "malformed" in body["detail"]
            ), body
        else:
            assert response.status == 200, body
    assert set(statuses) == {200, 400} and statuses[400] > 30
    assert await app_conn.fetchval("SELECT count(*) FROM clients") == 30


def test_bench_segments_options_are_parsed() -> None:
    args = build_parser().parse_args(
        ["bench", "segments", "--members", "5_000_000", "--set-members", "2000000", "--keep"]
    )
    assert (args.benchmark, args.members, args.set_members, args.keep) == (
        "segments",
        5_000_000,
        2_000_000,
        True,
    )
    defaults = build_parser().parse_args(["bench", "segments"])
    assert (defaults.members, defaults.set_members, defaults.keep, defaults.triggers) == (
        5_000_000,
        2_000_000,
        False,
        True,
    )
    assert build_parser().parse_args(["bench", "segments", "--no-triggers"]).triggers is False
    for bad in (["--members", "0"], ["--members", "lots"], ["--set-members", "-3"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["bench", "segments", *bad])
