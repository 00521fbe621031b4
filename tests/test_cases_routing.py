"""Case routing (SR-10): groups and rules, presence, both assignment modes, capacity, take
next, reassignment, and claims under concurrency."""

from __future__ import annotations

import asyncio
import itertools
import random

import asyncpg
from conftest import login_as
from test_cases_support import bad, events_of, journal, make_client, ok

from crm.cases import intake, routing
from crm.cases.channels import Inbound
from herald.audit import Actor
from herald.db import init_connection

SITE = Actor(login="forms")
SUPERVISOR = Actor(login="supervisor.test")
_logins = itertools.count(1)


async def make_agent(
    conn: asyncpg.Connection,
    *,
    groups: tuple[str, ...] = ("cc_l1",),
    presence: str = "online",
    capacity: int = 5,
    languages: tuple[str, ...] = (),
    channels: tuple[str, ...] = (),
    category_ids: tuple[int, ...] = (),
) -> int:
    user_id = await conn.fetchval(
        "INSERT INTO users (login, full_name, password_hash) VALUES ($1, $2, 'x') RETURNING id",
        f"agent{next(_logins)}",
        "Агент",
    )
    await conn.execute(
        "INSERT INTO case_agents (user_id, presence, capacity, languages, channels, category_ids) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        user_id,
        presence,
        capacity,
        list(languages),
        list(channels),
        list(category_ids),
    )
    await conn.executemany(
        "INSERT INTO case_group_members (group_code, user_id) VALUES ($1, $2)",
        [(g, user_id) for g in groups],
    )
    return user_id


async def new_case(conn: asyncpg.Connection, text: str = "Питання", **kw) -> int:
    return (
        await intake.ingest(conn, SITE, Inbound(channel=kw.pop("channel", "site"), text=text, **kw))
    ).case_id


async def bulk_cases(conn: asyncpg.Connection, n: int, group: str = "cc_l1") -> list[int]:
    rows = await conn.fetch(
        "INSERT INTO cases (channel, body, text_hash, created_by_login, group_code) "
        "SELECT 'site', 'Питання ' || g, sha256(g::text::bytea), 'test', $2 "
        "FROM generate_series(1, $1) AS g RETURNING id",
        n,
        group,
    )
    return sorted(r["id"] for r in rows)


async def assignees(conn: asyncpg.Connection) -> dict[int, int | None]:
    return {
        r["id"]: r["assignee_id"] for r in await conn.fetch("SELECT id, assignee_id FROM cases")
    }


async def user_id_of(conn: asyncpg.Connection, login: str) -> int:
    return await conn.fetchval("SELECT id FROM users WHERE login = $1", login)


async def connect(settings) -> asyncpg.Connection:
    conn = await asyncpg.connect(settings.database_url)
    await init_connection(conn)
    return conn


# -- placing cases in groups ---------------------------------------------------------------


async def test_rules_place_cases_on_intake_and_reclassification(
    client, demo_users, app_conn
) -> None:
    admin = await login_as(client, "admin")
    operator = await login_as(client, "operator_cc")
    cats = {
        r["code"]: r["id"] for r in await app_conn.fetch("SELECT code, id FROM case_categories")
    }
    # A rule by a parent category matches its subcategories
    rule = await ok(
        await client.post(
            "/api/v1/case-routing-rules",
            headers=admin,
            json={
                "name": "Рахунки",
                "position": 1,
                "category_ids": [cats["billing"]],
                "group_code": "finance",
            },
        ),
        201,
    )
    assert rule["category_ids"] == [cats["billing"]]
    cases = {
        "walk_in": await new_case(app_conn, "Прийшов до центру", channel="walk_in"),
        "leak": await new_case(app_conn, "Відчуваю запах газу"),
        "debt": await new_case(app_conn, "У мене борг"),
        "other": await new_case(app_conn, "Дякую"),
    }
    groups = {
        r["id"]: r["group_code"] for r in await app_conn.fetch("SELECT id, group_code FROM cases")
    }
    assert groups[cases["walk_in"]] == "service_centre"
    assert groups[cases["leak"]] == "technical"
    assert groups[cases["debt"]] == "finance"
    assert groups[cases["other"]] == "cc_l1"  # the default group
    created = (await events_of(client, operator, cases["debt"]))[0]
    assert (created["kind"], created["data"]["group_code"], created["data"]["routing_rule_id"]) == (
        "created",
        "finance",
        rule["id"],
    )
    # Reclassified as technical, the case moves to the technical group; its assignee, who
    # is not a member there, gives it back to that group's queue
    line1 = await make_agent(app_conn)
    await app_conn.execute("UPDATE cases SET assignee_id = $1 WHERE id = $2", line1, cases["other"])
    await ok(
        await client.patch(
            f"/api/v1/cases/{cases['other']}/classification",
            headers=operator,
            json={"case_type": "technical"},
        )
    )
    assert tuple(
        await app_conn.fetchrow(
            "SELECT group_code, assignee_id FROM cases WHERE id = $1", cases["other"]
        )
    ) == ("technical", None)
    moved = [
        e["data"]
        for e in await events_of(client, operator, cases["other"])
        if e["kind"] == "assignment"
    ]
    assert [
        (
            m["by"],
            m["reason"],
            m["from_group_code"],
            m["group_code"],
            m["from_assignee_id"],
            m["assignee_id"],
        )
        for m in moved
    ] == [("rule", "reclassification", "cc_l1", "technical", line1, None)]
    # Once a supervisor placed a case, reclassification leaves it where it is
    supervisor = await login_as(client, "supervisor")
    await ok(
        await client.post(
            f"/api/v1/cases/{cases['leak']}/assignment",
            headers=supervisor,
            json={"group_code": "cc_l2"},
        )
    )
    await ok(
        await client.patch(
            f"/api/v1/cases/{cases['leak']}/classification",
            headers=operator,
            json={"case_type": "financial"},
        )
    )
    assert (
        await app_conn.fetchval("SELECT group_code FROM cases WHERE id = $1", cases["leak"])
        == "cc_l2"
    )
    # No default group and no rule: the case has no group
    await ok(
        await client.put(
            "/api/v1/case-routing-settings", headers=admin, json={"default_group": None}
        )
    )
    orphan = await new_case(app_conn, "Ще одне питання")
    assert await app_conn.fetchval("SELECT group_code FROM cases WHERE id = $1", orphan) is None


async def test_groups_and_rules_configuration(client, demo_users, app_conn) -> None:
    admin = await login_as(client, "admin")
    supervisor = await login_as(client, "supervisor")
    seeded = {
        g["code"]: g for g in await ok(await client.get("/api/v1/case-groups", headers=supervisor))
    }
    assert set(seeded) == {"cc_l1", "cc_l2", "service_centre", "technical", "finance"}
    assert seeded["cc_l2"]["mode"] == "skills"
    group = await ok(
        await client.post(
            "/api/v1/case-groups",
            headers=admin,
            json={"code": "legal", "name_uk": "Юридичний відділ", "name_en": "Legal"},
        ),
        201,
    )
    assert (group["mode"], group["is_active"], group["member_ids"]) == ("round_robin", True, [])
    await bad(
        await client.post(
            "/api/v1/case-groups",
            headers=admin,
            json={"code": "legal", "name_uk": "a", "name_en": "a"},
        ),
        "",
        409,
    )
    await bad(
        await client.post(
            "/api/v1/case-groups",
            headers=admin,
            json={"code": "Legal Dept", "name_uk": "a", "name_en": "a"},
        ),
        "code",
    )
    await bad(
        await client.post(
            "/api/v1/case-groups",
            headers=admin,
            json={"code": "legal2", "name_uk": "a", "name_en": "a", "mode": "random"},
        ),
        "mode",
    )
    await bad(await client.patch("/api/v1/case-groups/legal", headers=admin, json={}), "body")
    await bad(
        await client.patch("/api/v1/case-groups/nope", headers=admin, json={"mode": "skills"}),
        "",
        404,
    )
    changed = await ok(
        await client.patch(
            "/api/v1/case-groups/legal",
            headers=admin,
            json={"mode": "skills", "name_en": "Legal department"},
        )
    )
    assert (changed["mode"], changed["name_en"]) == ("skills", "Legal department")
    # Members: unknown users are refused by position; the set replaces the old one
    operator_id = await user_id_of(app_conn, demo_users["operator_cc"])
    cos_id = await user_id_of(app_conn, demo_users["operator_cos"])
    await bad(
        await client.put(
            "/api/v1/case-groups/legal/members",
            headers=admin,
            json={"user_ids": [operator_id, 10**9]},
        ),
        "user_ids[1]",
    )
    members = await ok(
        await client.put(
            "/api/v1/case-groups/legal/members",
            headers=admin,
            json={"user_ids": [operator_id, cos_id]},
        )
    )
    assert members["member_ids"] == sorted([operator_id, cos_id])
    await ok(
        await client.put(
            "/api/v1/case-groups/legal/members", headers=admin, json={"user_ids": [cos_id]}
        )
    )
    entries = [(e["action"], e["field"]) for e in await journal(client, "case_group/legal")]
    assert entries.count(("link", "member")) == 2 and entries.count(("unlink", "member")) == 1
    assert ("create", None) in entries and ("update", "mode") in entries
    # Rules: unknown group and category are refused naming the field
    await bad(
        await client.post(
            "/api/v1/case-routing-rules", headers=admin, json={"name": "x", "group_code": "nope"}
        ),
        "group_code",
    )
    await bad(
        await client.post(
            "/api/v1/case-routing-rules",
            headers=admin,
            json={"name": "x", "group_code": "legal", "category_ids": [10**9]},
        ),
        "category_ids[0]",
    )
    await bad(
        await client.post(
            "/api/v1/case-routing-rules",
            headers=admin,
            json={"name": "x", "group_code": "legal", "channels": ["fax"]},
        ),
        "channels[0]",
    )
    rule = await ok(
        await client.post(
            "/api/v1/case-routing-rules",
            headers=admin,
            json={
                "name": "Е-пошта терміново",
                "group_code": "legal",
                "channels": ["email"],
                "priorities": ["urgent"],
            },
        ),
        201,
    )
    updated = await ok(
        await client.put(
            f"/api/v1/case-routing-rules/{rule['id']}",
            headers=admin,
            json={
                "name": "Е-пошта",
                "group_code": "legal",
                "channels": ["email"],
                "is_active": False,
            },
        )
    )
    assert (updated["is_active"], updated["priorities"]) == (False, [])
    await ok(await client.delete(f"/api/v1/case-routing-rules/{rule['id']}", headers=admin), 204)
    await bad(
        await client.delete(f"/api/v1/case-routing-rules/{rule['id']}", headers=admin), "", 404
    )
    await bad(
        await client.put(
            "/api/v1/case-routing-settings", headers=admin, json={"default_group": "nope"}
        ),
        "default_group",
    )
    # RBAC: configuration needs cases.admin
    await bad(
        await client.post(
            "/api/v1/case-groups",
            headers=supervisor,
            json={"code": "x_group", "name_uk": "a", "name_en": "a"},
        ),
        "",
        403,
    )
    await bad(await client.get("/api/v1/case-routing-rules", headers=supervisor), "", 403)


# -- presence ------------------------------------------------------------------------------


async def test_presence_own_and_others_with_history(client, demo_users, app_conn) -> None:
    operator = await login_as(client, "operator_cc")
    supervisor = await login_as(client, "supervisor")
    operator_id = await user_id_of(app_conn, demo_users["operator_cc"])
    mine = await ok(await client.get("/api/v1/me/presence", headers=operator))
    assert (mine["presence"], mine["capacity"]) == ("offline", 5)
    await ok(await client.put("/api/v1/me/presence", headers=operator, json={"presence": "online"}))
    await ok(await client.put("/api/v1/me/presence", headers=operator, json={"presence": "busy"}))
    await bad(
        await client.put("/api/v1/me/presence", headers=operator, json={"presence": "asleep"}),
        "presence",
    )
    # A supervisor sets anyone's presence, capacity and skills; an operator cannot
    await ok(
        await client.put(
            f"/api/v1/case-agents/{operator_id}/presence",
            headers=supervisor,
            json={"presence": "away"},
        )
    )
    await bad(
        await client.put(
            f"/api/v1/case-agents/{operator_id}/presence",
            headers=operator,
            json={"presence": "online"},
        ),
        "",
        403,
    )
    await bad(await client.get("/api/v1/case-agents", headers=operator), "", 403)
    await bad(
        await client.put(
            f"/api/v1/case-agents/{10**9}/presence", headers=supervisor, json={"presence": "online"}
        ),
        "user_id",
    )
    agent = await ok(
        await client.patch(
            f"/api/v1/case-agents/{operator_id}",
            headers=supervisor,
            json={"capacity": 3, "languages": ["uk", "en"], "channels": ["call", "viber"]},
        )
    )
    assert (agent["capacity"], agent["languages"], agent["channels"]) == (
        3,
        ["uk", "en"],
        ["call", "viber"],
    )
    await bad(
        await client.patch(
            f"/api/v1/case-agents/{operator_id}", headers=supervisor, json={"capacity": -1}
        ),
        "capacity",
    )
    await bad(
        await client.patch(
            f"/api/v1/case-agents/{operator_id}", headers=supervisor, json={"category_ids": [10**9]}
        ),
        "category_ids[0]",
    )
    history = await ok(
        await client.get(f"/api/v1/case-agent-presence?user_id={operator_id}", headers=supervisor)
    )
    assert [(h["previous"], h["presence"], h["actor_login"]) for h in history] == [
        ("offline", "online", demo_users["operator_cc"]),
        ("online", "busy", demo_users["operator_cc"]),
        ("busy", "away", demo_users["supervisor"]),
    ]
    assert history[0]["at"] <= history[1]["at"] <= history[2]["at"]
    assert [
        e["new_value"]
        for e in await journal(client, f"case_agent/{operator_id}")
        if e["field"] == "presence"
    ] == ["away", "busy", "online"]
    # The supervisor's view of loads
    await app_conn.execute(
        "INSERT INTO case_group_members (group_code, user_id) VALUES "
        "('cc_l1', $1), ('finance', $1)",
        operator_id,
    )
    case_id = await new_case(app_conn, "Питання")
    await app_conn.execute("UPDATE cases SET assignee_id = $1 WHERE id = $2", operator_id, case_id)
    loads = await ok(await client.get("/api/v1/case-agents?group_code=finance", headers=supervisor))
    assert [
        (a["login"], a["presence"], a["capacity"], a["open_cases"], a["groups"]) for a in loads
    ] == [(demo_users["operator_cc"], "away", 3, 1, ["cc_l1", "finance"])]
    assert (
        await ok(await client.get("/api/v1/case-agents?group_code=technical", headers=supervisor))
        == []
    )


# -- the routing pass ----------------------------------------------------------------------


async def test_round_robin_least_recently_assigned_online_within_capacity(
    app_conn, settings
) -> None:
    a = await make_agent(app_conn, capacity=2)
    b = await make_agent(app_conn, capacity=1)
    away = await make_agent(app_conn, presence="away")
    busy = await make_agent(app_conn, presence="busy")
    other_group = await make_agent(app_conn, groups=("finance",))
    cases = await bulk_cases(app_conn, 5)
    urgent = (await bulk_cases(app_conn, 1))[0]
    await app_conn.execute("UPDATE cases SET priority = 'urgent' WHERE id = $1", urgent)
    assert await routing.route_group(app_conn, "cc_l1", "round_robin") == 3
    got = await assignees(app_conn)
    # The most urgent first, then the oldest; never-assigned agents by id, then the least
    # recently assigned
    assert (got[urgent], got[cases[0]], got[cases[1]]) == (a, b, a)
    assert [got[c] for c in cases[2:]] == [None, None, None]
    assert not {away, busy, other_group} & set(got.values())
    assert await routing.route_group(app_conn, "cc_l1", "round_robin") == 0  # all full
    # The agent who comes online gets the rest; whoever went away keeps their cases
    await app_conn.execute("UPDATE case_agents SET presence = 'away' WHERE user_id = $1", a)
    await app_conn.execute("UPDATE case_agents SET presence = 'online' WHERE user_id = $1", away)
    pool = await asyncpg.create_pool(
        settings.database_url, init=init_connection, min_size=1, max_size=2
    )
    try:
        assert await routing.run_pass(pool) == 3
    finally:
        await pool.close()
    got = await assignees(app_conn)
    assert [got[c] for c in cases[2:]] == [away, away, away]
    assert (got[urgent], got[cases[1]]) == (a, a)
    events = await app_conn.fetch(
        "SELECT case_id, actor_login, data FROM case_events "
        "WHERE kind = 'assignment' AND data->>'by' = 'round_robin'"
    )
    assert sorted(e["case_id"] for e in events) == sorted([urgent, *cases])
    assert {e["actor_login"] for e in events} == {"routing"}
    # Closing a case frees a slot; resolved cases do not count either
    await app_conn.execute("UPDATE cases SET status = 'resolved' WHERE id = $1", cases[0])
    extra = (await bulk_cases(app_conn, 1))[0]
    await app_conn.execute("UPDATE case_agents SET presence = 'online' WHERE user_id = $1", a)
    assert await routing.route_group(app_conn, "cc_l1", "round_robin") == 1
    assert (await assignees(app_conn))[extra] == b


async def test_skills_match_category_with_parent_channel_and_language(app_conn) -> None:
    cats = {
        r["code"]: r["id"] for r in await app_conn.fetch("SELECT code, id FROM case_categories")
    }
    gas = await make_agent(app_conn, groups=("technical",), category_ids=(cats["supply"],))
    english_mail = await make_agent(
        app_conn, groups=("technical",), languages=("en",), channels=("email",)
    )
    english = await make_client(app_conn)
    await app_conn.execute("UPDATE clients SET language = 'en' WHERE id = $1", english["client_id"])
    leak = await new_case(app_conn, "Запах газу у квартирі")  # supply.leak, technical
    mail = await new_case(
        app_conn,
        "My gas meter",
        channel="email",
        email="a@example.com",
        client_id=english["client_id"],
    )
    debt = await new_case(app_conn, "Питання про борг")
    ukr_mail = await new_case(app_conn, "Лист", channel="email", email="b@example.com")
    await app_conn.execute(
        "UPDATE cases SET group_code = 'technical', group_manual = true "
        "WHERE id = ANY($1::bigint[])",
        [mail, debt, ukr_mail],
    )
    assert await routing.route_group(app_conn, "technical", "skills") == 2
    got = await assignees(app_conn)
    assert (got[leak], got[mail], got[debt], got[ukr_mail]) == (gas, english_mail, None, None)
    # An agent with no skills takes anything; the least loaded goes first
    anyone = await make_agent(app_conn, groups=("technical",))
    outage = await new_case(app_conn, "Немає газу з ранку")  # supply.outage
    assert await routing.route_group(app_conn, "technical", "skills") == 3
    got = await assignees(app_conn)
    assert got[outage] in (gas, anyone) and {got[debt], got[ukr_mail]} == {anyone}
    loads = {a.user_id: a.open_cases for a in await routing.agent_loads(app_conn, "technical")}
    assert loads == {
        gas: 1 + (got[outage] == gas),
        english_mail: 1,
        anyone: 2 + (got[outage] == anyone),
    }


async def test_concurrent_passes_and_claims_never_double_assign_or_overfill(
    app_conn, settings
) -> None:
    rng = random.Random(5)
    capacities = [rng.randint(4, 14) for _ in range(20)]
    agents = [await make_agent(app_conn, capacity=c) for c in capacities]
    cases = await bulk_cases(app_conn, 200)
    conns = [await connect(settings) for _ in range(20)]
    try:

        async def routing_pass(conn: asyncpg.Connection) -> int:
            total = 0
            while n := await routing.route_group(conn, "cc_l1", "round_robin", batch=15):
                total += n
                await asyncio.sleep(0)
            return total

        async def claimer(conn: asyncpg.Connection, user_id: int) -> int:
            me = Actor(login=f"agent{user_id}", id=user_id)
            taken = 0
            while True:
                try:
                    if await routing.take_next(conn, me) is None:
                        return taken
                except Exception as exc:  # at capacity: a Conflict ends this claimer
                    assert "capacity" in str(exc), exc
                    return taken
                taken += 1

        results = await asyncio.gather(
            *(routing_pass(c) for c in conns[:10]),
            *(claimer(c, u) for c, u in zip(conns[10:], agents[:10], strict=True)),
        )
    finally:
        for c in conns:
            await c.close()
    assert sum(results[10:]) > 0 and sum(results[:10]) > 0  # both kinds of claim took part
    got = await assignees(app_conn)
    assigned = [c for c in cases if got[c] is not None]
    assert len(assigned) == min(len(cases), sum(capacities)) == sum(results)
    per_agent = await app_conn.fetch(
        "SELECT a.user_id, a.capacity, count(c.id) AS n FROM case_agents a "
        "LEFT JOIN cases c ON c.assignee_id = a.user_id GROUP BY a.user_id"
    )
    assert all(r["n"] <= r["capacity"] for r in per_agent)
    assert sum(r["n"] for r in per_agent) == len(assigned)
    twice = await app_conn.fetchval(
        "SELECT count(*) FROM (SELECT case_id FROM case_events WHERE kind = 'assignment' "
        "GROUP BY case_id HAVING count(*) > 1) x"
    )
    assert twice == 0
    assert await app_conn.fetchval(
        "SELECT count(*) FROM case_events WHERE kind = 'assignment'"
    ) == len(assigned)


# -- take next and reassignment ------------------------------------------------------------


async def test_take_next_claims_my_groups_best_case(client, demo_users, app_conn) -> None:
    operator = await login_as(client, "operator_cc")
    analyst = await login_as(client, "analyst")
    operator_id = await user_id_of(app_conn, demo_users["operator_cc"])
    old, newer = await bulk_cases(app_conn, 2)
    high = (await bulk_cases(app_conn, 1))[0]
    await app_conn.execute("UPDATE cases SET priority = 'high' WHERE id = $1", high)
    await bulk_cases(app_conn, 3, group="finance")
    await bad(await client.post("/api/v1/cases/next", headers=analyst), "", 403)
    # Offline: refused; online but in no group: nothing
    body = await bad(await client.post("/api/v1/cases/next", headers=operator), "", 409)
    assert "online" in body["detail"]
    await ok(await client.put("/api/v1/me/presence", headers=operator, json={"presence": "online"}))
    assert (await client.post("/api/v1/cases/next", headers=operator)).status == 204
    await app_conn.execute(
        "INSERT INTO case_group_members (group_code, user_id) VALUES ('cc_l1', $1)", operator_id
    )
    await app_conn.execute("UPDATE case_agents SET capacity = 2 WHERE user_id = $1", operator_id)
    first = await ok(await client.post("/api/v1/cases/next", headers=operator))
    second = await ok(await client.post("/api/v1/cases/next", headers=operator))
    assert (first["id"], first["assignee_id"], second["id"]) == (high, operator_id, old)
    body = await bad(await client.post("/api/v1/cases/next", headers=operator), "", 409)
    assert "capacity" in body["detail"]
    assert (await assignees(app_conn))[newer] is None
    claimed = [e for e in await events_of(client, operator, high) if e["kind"] == "assignment"]
    assert [(e["actor_login"], e["data"]["by"], e["data"]["assignee_id"]) for e in claimed] == [
        (demo_users["operator_cc"], "take_next", operator_id)
    ]


async def test_supervisor_reassigns_to_user_or_group(client, demo_users, app_conn) -> None:
    supervisor = await login_as(client, "supervisor")
    operator = await login_as(client, "operator_cc")
    agent = await make_agent(app_conn, groups=("finance",), capacity=1)
    busy_agent = await make_agent(app_conn, groups=("finance",), capacity=0)
    case_id, second = await bulk_cases(app_conn, 2)
    url = f"/api/v1/cases/{case_id}/assignment"
    await bad(await client.post(url, headers=operator, json={"group_code": "finance"}), "", 403)
    await bad(await client.post(url, headers=supervisor, json={}), "user_id")
    await bad(await client.post(url, headers=supervisor, json={"group_code": "nope"}), "group_code")
    await bad(await client.post(url, headers=supervisor, json={"user_id": "x"}), "user_id")
    await bad(await client.post(url, headers=supervisor, json={"user_id": agent}), "user_id")
    await bad(
        await client.post(
            "/api/v1/cases/999999999/assignment", headers=supervisor, json={"group_code": "finance"}
        ),
        "",
        404,
    )
    moved = await ok(
        await client.post(
            url,
            headers=supervisor,
            json={"user_id": agent, "group_code": "finance", "comment": "Питання про оплату"},
        )
    )
    assert (moved["group_code"], moved["assignee_id"]) == ("finance", agent)
    # Capacity holds for a supervisor too
    await bad(
        await client.post(
            f"/api/v1/cases/{second}/assignment",
            headers=supervisor,
            json={"user_id": busy_agent, "group_code": "finance"},
        ),
        "",
        409,
    )
    # Back to a group's queue
    queued = await ok(await client.post(url, headers=supervisor, json={"group_code": "cc_l2"}))
    assert (queued["group_code"], queued["assignee_id"]) == ("cc_l2", None)
    events = [e for e in await events_of(client, supervisor, case_id) if e["kind"] == "assignment"]
    assert [
        (
            e["data"]["by"],
            e["data"]["from_group_code"],
            e["data"]["group_code"],
            e["data"]["from_assignee_id"],
            e["data"]["assignee_id"],
            e["body"],
        )
        for e in events
    ] == [
        ("manual", "cc_l1", "finance", None, agent, "Питання про оплату"),
        ("manual", "finance", "cc_l2", agent, None, None),
    ]
    assert {e["actor_login"] for e in events} == {demo_users["supervisor"]}
    entries = [
        (e["field"], e["old_value"], e["new_value"])
        for e in await journal(client, f"case/{case_id}")
    ]
    assert ("assignee_id", None, agent) in entries and ("assignee_id", agent, None) in entries
    assert ("group_code", "finance", "cc_l2") in entries
    # A resolved case is not reassigned
    await app_conn.execute("UPDATE cases SET status = 'resolved' WHERE id = $1", second)
    await bad(
        await client.post(
            f"/api/v1/cases/{second}/assignment", headers=supervisor, json={"group_code": "finance"}
        ),
        "",
        409,
    )


# -- reopening (issue 20 point 9) -------------------------------------------------------------


async def test_a_reopened_case_never_puts_its_assignee_over_capacity(
    client, demo_users, settings, app_conn
) -> None:
    from crm.cases import automation
    from herald.db import create_pool

    operator = await login_as(client, "operator_cc")
    full = await make_agent(app_conn, capacity=2)
    roomy = await make_agent(app_conn, capacity=5)
    ids = await bulk_cases(app_conn, 6)
    await app_conn.execute(
        "UPDATE cases SET assignee_id = $2, status = 'in_progress', "
        "status_changed_at = herald_now() WHERE id = ANY($1::bigint[])",
        ids[:3],
        full,
    )
    await app_conn.execute(
        "UPDATE cases SET assignee_id = $2, status = 'in_progress', "
        "status_changed_at = herald_now() WHERE id = ANY($1::bigint[])",
        ids[3:],
        roomy,
    )
    # Given a resolved case of each, while the first agent took on another (2 open of 2)
    for case_id in (ids[0], ids[3]):
        await ok(
            await client.post(
                f"/api/v1/cases/{case_id}/status", headers=operator, json={"status": "resolved"}
            )
        )
    # When the operator reopens them
    for case_id in (ids[0], ids[3]):
        reopened = await ok(
            await client.post(
                f"/api/v1/cases/{case_id}/status", headers=operator, json={"status": "in_progress"}
            )
        )
        assert reopened["status"] == "in_progress"
    # Then the full agent's case went back to the group's queue; the other kept theirs
    found = await assignees(app_conn)
    assert (found[ids[0]], found[ids[3]]) == (None, roomy)
    loads = {a.user_id: a.open_cases for a in await routing.agent_loads(app_conn)}
    assert loads[full] == 2
    [released] = [e for e in await events_of(client, operator, ids[0]) if e["kind"] == "assignment"]
    assert released["data"]["by"] == "capacity" and released["data"]["from_assignee_id"] == full
    assert ("assignee_id", None) in [
        (e["field"], e["new_value"]) for e in await journal(client, f"case/{ids[0]}")
    ]
    # The idle automation reopening cases in bulk holds capacity too
    await app_conn.execute("UPDATE cases SET assignee_id = $2 WHERE id = $1", ids[0], full)
    await app_conn.execute(
        "UPDATE cases SET status = 'resolved', status_changed_at = herald_now() "
        "- interval '3 hours', last_inbound_at = herald_now() - interval "
        "'3 hours' WHERE id = ANY($1::bigint[])",
        [ids[0], ids[1]],
    )
    await app_conn.execute(
        "UPDATE cases SET assignee_id = $2, status = 'in_progress' WHERE id = $1", ids[2], full
    )
    await app_conn.execute(
        "INSERT INTO case_automation_rules (name, trigger, from_status, "
        "to_status, idle_hours) VALUES ('Повернути', 'idle', 'resolved', "
        "'in_progress', 1)"
    )
    await app_conn.execute(
        "UPDATE case_automation_rules SET is_active = false WHERE to_status = 'closed'"
    )
    pool = await create_pool(settings)
    try:
        # ids[0] and ids[1] idle Resolved; the agent has ids[2] open: one of the two fits
        assert await automation.run_due_automations(pool) == 2
    finally:
        await pool.close()
    found = await assignees(app_conn)
    assert sorted([found[ids[0]], found[ids[1]]], key=str) == sorted([full, None], key=str)
    loads = {a.user_id: a.open_cases for a in await routing.agent_loads(app_conn)}
    assert loads[full] == 2
