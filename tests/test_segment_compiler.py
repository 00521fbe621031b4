"""The condition compiler against the real PostgreSQL, checked by a reference evaluator.

A small population with every kind of value (clients without accounts, clients with two
accounts, missing billing snapshots, explicit consents, external attributes) is queried
through the compiled SQL, and the result compared with a plain-Python evaluation of the
documented semantics. A seeded generator of random and hostile trees then asserts that
every tree is either refused with InvalidInput naming a path or gives the reference result:
never a database error.
"""

from __future__ import annotations

import datetime as dt
import random
import string
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from crm.segments import catalogue as catalogue_mod
from crm.segments.catalogue import AttributeDeclaration, AttributeValue, Catalogue
from crm.segments.compiler import client_ids, count_query
from crm.segments.conditions import MAX_DEPTH, parse
from herald import clock
from herald.audit import SYSTEM
from herald.errors import InvalidInput

REGIONS = ["UA-30", "UA-32", "UA-46", "UA-51"]
TYPES = ["household", "household_heating", "condominium"]
REGISTERS = ["idp", "veteran", "low_income"]
CITIES = ["Київ", "Кам'янське", "Біла Церква", "Львів"]
TARIFFS = ["household_fixed", "household_annual", "condominium"]
STATUSES = ["active", "suspended", "closed"]


def today() -> dt.date:
    return clock.now().astimezone(ZoneInfo("Europe/Kyiv")).date()


def norm(text: str) -> str:
    for mark in "\u02bc\u2019\u2018'`\u00b4\u201c\u201d\u00ab\u00bb\"":
        text = text.replace(mark, "")
    return " ".join(text.lower().split())


class Population:
    """The rows loaded, in the shape the reference evaluator reads."""

    def __init__(self) -> None:
        self.clients: dict[int, dict[str, Any]] = {}
        self.accounts: dict[int, list[dict[str, Any]]] = {}
        self.consents: dict[tuple[int, str, str], bool] = {}
        self.external: dict[tuple[str, int], Any] = {}
        self.usage: dict[tuple[int, str], dict[str, Any]] = {}


async def load_population(conn: asyncpg.Connection, n: int = 80, seed: int = 7) -> Population:
    """``n`` clients: a tenth without accounts, a fifth with two, some without billing."""
    rng = random.Random(seed)
    pop = Population()
    account_id = 0
    for cid in range(1, n + 1):
        birth = (
            None
            if rng.random() < 0.2
            else dt.date(1940 + rng.randrange(60), 1 + rng.randrange(12), 1)
        )
        pop.clients[cid] = {
            "birth_date": birth,
            "created_at": today() - dt.timedelta(days=rng.randrange(900)),
        }
        accounts = []
        for _ in range(0 if cid % 10 == 0 else (2 if cid % 5 == 0 else 1)):
            account_id += 1
            billing = None
            if rng.random() < 0.85:
                paid = (
                    None if rng.random() < 0.2 else today() - dt.timedelta(days=rng.randrange(200))
                )
                debt = Decimal(rng.choice([0, 0, 50, 120.5, 900, 2500]))
                billing = {
                    "balance": -debt if debt else Decimal(rng.randrange(300)),
                    "debt": debt,
                    "last_payment_at": paid,
                    "due_date": today() + dt.timedelta(days=rng.randrange(-30, 30)),
                    "last_charge_amount": None
                    if rng.random() < 0.3
                    else Decimal(rng.randrange(1000)),
                    "last_payment_amount": Decimal(rng.randrange(500)),
                }
            accounts.append(
                {
                    "id": account_id,
                    "region_code": rng.choice(REGIONS),
                    "consumer_type": rng.choice(TYPES),
                    "registers": rng.sample(REGISTERS, rng.randrange(3)),
                    "destroyed_housing": rng.random() < 0.1,
                    "tariff_code": rng.choice(TARIFFS),
                    "status": rng.choice(STATUSES),
                    "city": rng.choice(CITIES),
                    "opened_at": today() - dt.timedelta(days=rng.randrange(4000)),
                    "billing": billing,
                }
            )
        pop.accounts[cid] = accounts
        for channel in ("app", "cabinet"):
            if rng.random() < 0.4:
                first = dt.datetime.combine(
                    today() - dt.timedelta(days=rng.randrange(300, 900)), dt.time(12), dt.UTC
                )
                last = dt.datetime.combine(
                    today() - dt.timedelta(days=rng.randrange(0, 300)), dt.time(12), dt.UTC
                )
                pop.usage[(cid, channel)] = {
                    "first_at": first,
                    "last_at": last,
                    "interactions": rng.randrange(1, 50),
                }
        for channel in ("sms", "email"):
            for topic in ("marketing", "debt"):
                if rng.random() < 0.3:
                    pop.consents[(cid, channel, topic)] = rng.random() < 0.5
    await conn.executemany(
        "INSERT INTO clients (id, last_name, first_name, birth_date, created_at) "
        "VALUES ($1, 'Шевченко', 'Тарас', $2, $3::date)",
        [(cid, c["birth_date"], c["created_at"]) for cid, c in pop.clients.items()],
    )
    rows = [(a["id"], cid, a) for cid, accounts in pop.accounts.items() for a in accounts]
    await conn.executemany(
        "INSERT INTO accounts (id, client_id, or_number, eic_code, region_code, city, street, building, "
        "consumer_type, registers, destroyed_housing, tariff_code, status, opened_at) "
        "VALUES ($1::bigint, $2, lpad($1::bigint::text, 10, '0'), "
        "'56XS' || lpad($1::bigint::text, 11, '0') || 'A', $3, $4, "
        "'вул. Шевченка', '1', $5, $6, $7, $8, $9, $10)",
        [
            (
                aid,
                cid,
                a["region_code"],
                a["city"],
                a["consumer_type"],
                a["registers"],
                a["destroyed_housing"],
                a["tariff_code"],
                a["status"],
                a["opened_at"],
            )
            for aid, cid, a in rows
        ],
    )
    await conn.executemany(
        "INSERT INTO billing_snapshots (account_id, balance, debt, last_payment_at, due_date, "
        "last_charge_amount, last_payment_amount, fetched_at) VALUES ($1, $2, $3, $4, $5, $6, $7, herald_now())",
        [
            (
                aid,
                b["balance"],
                b["debt"],
                b["last_payment_at"],
                b["due_date"],
                b["last_charge_amount"],
                b["last_payment_amount"],
            )
            for aid, _, a in rows
            if (b := a["billing"]) is not None
        ],
    )
    await conn.executemany(
        "INSERT INTO consents (client_id, channel, topic, opted_in, source) VALUES ($1, $2, $3, $4, 'import')",
        [(cid, ch, t, v) for (cid, ch, t), v in pop.consents.items()],
    )
    await conn.executemany(
        "INSERT INTO channel_usage (client_id, channel, first_at, last_at, interactions, last_type) "
        "VALUES ($1, $2, $3, $4, $5, 'login')",
        [
            (cid, ch, u["first_at"], u["last_at"], u["interactions"])
            for (cid, ch), u in pop.usage.items()
        ],
    )
    for decl, make in (
        (
            AttributeDeclaration(
                code="ext.shop.orders", label_uk="Замовлення", label_en="Orders", type="number"
            ),
            lambda: rng.randrange(10),
        ),
        (
            AttributeDeclaration(
                code="ext.app.tier",
                label_uk="Рівень",
                label_en="Tier",
                type="enum",
                values=["gold", "silver"],
            ),
            lambda: rng.choice(["gold", "silver"]),
        ),
        (
            AttributeDeclaration(
                code="ext.app.tags", label_uk="Мітки", label_en="Tags", type="string_list"
            ),
            lambda: rng.sample(["eco", "vip", "new"], rng.randrange(3)),
        ),
        (
            AttributeDeclaration(
                code="ext.app.nick", label_uk="Нік", label_en="Nick", type="string"
            ),
            lambda: rng.choice(["Олег", "олеГ", "Mar'yana", "", "  "]),
        ),
    ):
        await catalogue_mod.declare(conn, SYSTEM, decl)
        values = [AttributeValue(cid, make()) for cid in pop.clients if rng.random() < 0.6]
        await catalogue_mod.import_values(conn, SYSTEM, decl.code, values)
        for v in values:
            stored = Decimal(v.value) if decl.type == "number" else v.value
            pop.external[(decl.code, v.client_id)] = stored
    return pop


# -- the reference evaluator -------------------------------------------------------------


def _test(kind: str, op: str, value: Any, v: Any) -> bool:
    if op == "is_empty":
        if kind == "string":
            return v is None or v.strip() == ""
        if kind == "string_list":
            return v is None or len(v) == 0
        return v is None
    if op == "is_not_empty":
        return not _test(kind, "is_empty", None, v)
    if v is None:
        return False
    if kind == "date" and isinstance(v, dt.datetime):
        v = v.date()
    if kind in ("number",):
        v = Decimal(v)
        value = (
            [Decimal(str(x)) for x in value]
            if isinstance(value, list)
            else Decimal(str(value))
            if not isinstance(value, bool) and isinstance(value, (int, float))
            else value
        )
    if kind == "date" and op not in ("older_than_days", "within_last_days"):
        value = (
            [dt.date.fromisoformat(x) for x in value]
            if isinstance(value, list)
            else dt.date.fromisoformat(value)
        )
    if kind == "string_list":
        return value in v if op == "contains" else bool(set(v) & set(value))
    if kind == "string":
        v = norm(v)
        value = [norm(x) for x in value] if isinstance(value, list) else norm(value)
        if op == "contains":
            return value in v
    if op == "older_than_days":
        return v < today() - dt.timedelta(days=value)
    if op == "within_last_days":
        return today() - dt.timedelta(days=value) <= v <= today()
    return {
        "equals": lambda: v == value,
        "not_equals": lambda: v != value,
        "in": lambda: v in value,
        "not_in": lambda: v not in value,
        "between": lambda: value[0] <= v <= value[1],
        "lt": lambda: v < value,
        "lte": lambda: v <= value,
        "gt": lambda: v > value,
        "gte": lambda: v >= value,
    }[op]()


def evaluate(
    tree: dict[str, Any],
    pop: Population,
    catalogue: Catalogue,
    cid: int,
    account: dict[str, Any] | None,
) -> bool:
    if "all" in tree:
        return all(evaluate(t, pop, catalogue, cid, account) for t in tree["all"])
    if "any" in tree:
        return any(evaluate(t, pop, catalogue, cid, account) for t in tree["any"])
    if "not" in tree:
        return not evaluate(tree["not"], pop, catalogue, cid, account)
    attribute = catalogue.attributes[tree["attribute"]]
    source = attribute.source
    if source == "consent":
        choice = pop.consents.get((cid, tree["channel"], tree["topic"]))
        if choice is None:
            choice = not catalogue.topic_requires_opt_in[tree["topic"]]
        return choice == tree["value"]
    column = attribute.source_column
    if source == "external":
        v = pop.external.get((attribute.code, cid))
    elif column is None:
        raise AssertionError(f"{attribute.code} has no source column")
    elif source == "channel_usage":
        v = pop.usage.get((cid, tree["channel"]), {}).get(column)
    elif source == "client":
        v = pop.clients[cid][column]
    elif source == "account":
        v = None if account is None else account[column]
    else:
        billing = None if account is None else account["billing"]
        v = None if billing is None else billing[column]
    return _test(attribute.type, tree["op"], tree.get("value"), v)


def expected(tree: dict[str, Any], pop: Population, catalogue: Catalogue) -> set[int]:
    return {
        cid
        for cid in pop.clients
        if any(evaluate(tree, pop, catalogue, cid, a) for a in (pop.accounts[cid] or (None,)))
    }


async def run(
    conn: asyncpg.Connection, tree: Any, catalogue: Catalogue, shape: str = "all"
) -> set[int]:
    condition = parse(tree, catalogue)
    if shape == "ids":
        query = client_ids(condition, catalogue, "ids", ids=list(range(1, 200)))
    else:
        query = client_ids(condition, catalogue)
    rows = await conn.fetch(query.sql, *query.params)
    found = [r["client_id"] for r in rows]
    assert len(found) == len(set(found)), "a client came out twice"
    count = count_query(condition, catalogue)
    assert await conn.fetchval(count.sql, *count.params) == len(found)
    return set(found)


@pytest.fixture
async def world(app_conn: asyncpg.Connection) -> tuple[asyncpg.Connection, Population, Catalogue]:
    pop = await load_population(app_conn)
    return app_conn, pop, await catalogue_mod.load(app_conn)


# -- every operator and type -------------------------------------------------------------

LEAVES: list[dict[str, Any]] = [
    {"attribute": "account.region", "op": "equals", "value": "UA-30"},
    {"attribute": "account.region", "op": "not_equals", "value": "UA-30"},
    {"attribute": "account.region", "op": "in", "value": ["UA-30", "UA-46"]},
    {"attribute": "account.region", "op": "not_in", "value": ["UA-30", "UA-46"]},
    {"attribute": "account.consumer_type", "op": "equals", "value": "condominium"},
    {"attribute": "account.registers", "op": "contains", "value": "idp"},
    {"attribute": "account.registers", "op": "in", "value": ["veteran", "low_income"]},
    {"attribute": "account.registers", "op": "is_empty"},
    {"attribute": "account.registers", "op": "is_not_empty"},
    {"attribute": "account.destroyed_housing", "op": "equals", "value": True},
    {"attribute": "account.tariff", "op": "in", "value": ["condominium"]},
    {"attribute": "account.status", "op": "not_equals", "value": "closed"},
    {"attribute": "account.city", "op": "equals", "value": "кам’янське"},
    {"attribute": "account.city", "op": "contains", "value": "ЦЕРК"},
    {"attribute": "account.city", "op": "in", "value": ["львів", "КИЇВ"]},
    {"attribute": "account.city", "op": "not_in", "value": ["львів"]},
    {"attribute": "account.opened_at", "op": "older_than_days", "value": 1000},
    {"attribute": "account.opened_at", "op": "within_last_days", "value": 365},
    {"attribute": "account.opened_at", "op": "between", "value": ["2018-01-01", "2022-12-31"]},
    {"attribute": "billing.debt", "op": "gt", "value": 100},
    {"attribute": "billing.debt", "op": "gte", "value": 120.5},
    {"attribute": "billing.debt", "op": "lt", "value": 50},
    {"attribute": "billing.debt", "op": "lte", "value": 50},
    {"attribute": "billing.debt", "op": "equals", "value": 0},
    {"attribute": "billing.debt", "op": "not_equals", "value": 0},
    {"attribute": "billing.balance", "op": "between", "value": [-1000, 100.25]},
    {"attribute": "billing.balance", "op": "is_empty"},
    {"attribute": "billing.last_payment_at", "op": "older_than_days", "value": 60},
    {"attribute": "billing.last_payment_at", "op": "within_last_days", "value": 30},
    {"attribute": "billing.last_payment_at", "op": "is_empty"},
    {"attribute": "billing.last_charge_amount", "op": "is_not_empty"},
    {"attribute": "billing.due_date", "op": "lt", "value": today().isoformat()},
    {"attribute": "client.birth_date", "op": "lt", "value": "1970-01-01"},
    {"attribute": "client.birth_date", "op": "is_empty"},
    {"attribute": "client.created_at", "op": "within_last_days", "value": 100},
    {
        "attribute": "consent.opted_in",
        "op": "equals",
        "value": True,
        "channel": "sms",
        "topic": "marketing",
    },
    {
        "attribute": "consent.opted_in",
        "op": "equals",
        "value": False,
        "channel": "sms",
        "topic": "marketing",
    },
    {
        "attribute": "consent.opted_in",
        "op": "equals",
        "value": True,
        "channel": "email",
        "topic": "debt",
    },
    {
        "attribute": "consent.opted_in",
        "op": "equals",
        "value": False,
        "channel": "email",
        "topic": "debt",
    },
    {"attribute": "usage.last_at", "op": "within_last_days", "value": 90, "channel": "app"},
    {"attribute": "usage.last_at", "op": "older_than_days", "value": 90, "channel": "cabinet"},
    {"attribute": "usage.last_at", "op": "is_empty", "channel": "app"},
    {
        "attribute": "usage.first_at",
        "op": "lt",
        "value": (today() - dt.timedelta(days=600)).isoformat(),
        "channel": "app",
    },
    {"attribute": "usage.interactions", "op": "gt", "value": 20, "channel": "cabinet"},
    {"attribute": "ext.shop.orders", "op": "gte", "value": 5},
    {"attribute": "ext.shop.orders", "op": "in", "value": [1, 2]},
    {"attribute": "ext.shop.orders", "op": "is_empty"},
    {"attribute": "ext.app.tier", "op": "equals", "value": "gold"},
    {"attribute": "ext.app.tier", "op": "not_equals", "value": "gold"},
    {"attribute": "ext.app.tags", "op": "contains", "value": "vip"},
    {"attribute": "ext.app.tags", "op": "is_empty"},
    {"attribute": "ext.app.nick", "op": "equals", "value": "олег"},
    {"attribute": "ext.app.nick", "op": "is_empty"},
    {"attribute": "ext.app.nick", "op": "contains", "value": "MARY"},
]


async def test_every_leaf_matches_the_reference(world) -> None:
    conn, pop, catalogue = world
    for leaf in LEAVES:
        want = expected(leaf, pop, catalogue)
        assert await run(conn, leaf, catalogue) == want, leaf
        assert await run(conn, {"not": leaf}, catalogue) == expected(
            {"not": leaf}, pop, catalogue
        ), leaf
        # The incremental shape (by client ids) agrees with the bulk one.
        assert await run(conn, leaf, catalogue, "ids") == want, leaf
    # The leaves are not trivial: most select some clients and leave out others.
    sizes = [len(expected(leaf, pop, catalogue)) for leaf in LEAVES]
    assert sum(0 < s < len(pop.clients) for s in sizes) >= len(LEAVES) - 3


async def test_nesting_not_and_accounts_semantics(world) -> None:
    conn, pop, catalogue = world
    trees: list[dict[str, Any]] = [
        # The brief's example: a region, a debt and a payment older than 60 days.
        {
            "all": [
                {"attribute": "account.region", "op": "in", "value": ["UA-30", "UA-32"]},
                {"attribute": "billing.debt", "op": "gt", "value": 0},
                {"attribute": "billing.last_payment_at", "op": "older_than_days", "value": 60},
            ]
        },
        # Not in Kyiv: clients without accounts match (they have no account in Kyiv).
        {"not": {"attribute": "account.region", "op": "equals", "value": "UA-30"}},
        {
            "any": [
                {
                    "all": [
                        {"attribute": "account.status", "op": "equals", "value": "active"},
                        {
                            "not": {
                                "attribute": "consent.opted_in",
                                "op": "equals",
                                "value": True,
                                "channel": "sms",
                                "topic": "marketing",
                            }
                        },
                    ]
                },
                {
                    "not": {
                        "any": [
                            {"attribute": "ext.shop.orders", "op": "lt", "value": 3},
                            {"attribute": "client.birth_date", "op": "is_empty"},
                        ]
                    }
                },
            ]
        },
        {
            "all": [
                {"not": {"not": {"attribute": "billing.balance", "op": "is_empty"}}},
                {"attribute": "client.created_at", "op": "older_than_days", "value": 10},
            ]
        },
    ]
    for tree in trees:
        want = expected(tree, pop, catalogue)
        assert await run(conn, tree, catalogue) == want, tree
        assert await run(conn, tree, catalogue, "ids") == want, tree
    no_accounts = {cid for cid, accounts in pop.accounts.items() if not accounts}
    assert no_accounts and no_accounts <= await run(conn, trees[1], catalogue)
    assert not no_accounts & await run(conn, trees[0], catalogue)


BAD_TREES: list[tuple[Any, str]] = [
    ({"attribute": "account.nowhere", "op": "equals", "value": 1}, "condition.attribute"),
    (
        {
            "all": [
                {"attribute": "billing.debt", "op": "gt", "value": 1},
                {"attribute": "billing.debt", "op": "gt", "value": 1},
                {"attribute": "billing.debt", "op": "gt", "value": "many"},
            ]
        },
        "condition.all[2].value",
    ),
    (
        {"any": [{"attribute": "account.region", "op": "contains", "value": "UA"}]},
        "condition.any[0].op",
    ),
    (
        {"not": {"attribute": "account.region", "op": "equals", "value": "UA-99"}},
        "condition.not.value",
    ),
    ({"attribute": "billing.debt", "op": "between", "value": [10, 1]}, "condition.value"),
    (
        {"attribute": "billing.last_payment_at", "op": "older_than_days", "value": -1},
        "condition.value",
    ),
    (
        {"attribute": "billing.last_payment_at", "op": "equals", "value": "2024-02-30"},
        "condition.value",
    ),
    ({"attribute": "account.destroyed_housing", "op": "equals", "value": 1}, "condition.value"),
    ({"attribute": "billing.debt", "op": "is_empty", "value": 3}, "condition.value"),
    (
        {
            "attribute": "consent.opted_in",
            "op": "equals",
            "value": True,
            "channel": "fax",
            "topic": "debt",
        },
        "condition.channel",
    ),
    (
        {"attribute": "consent.opted_in", "op": "equals", "value": True, "channel": "sms"},
        "condition.topic",
    ),
    ({"attribute": "billing.debt", "op": "gt", "value": 1, "topic": "debt"}, "condition.topic"),
    ({"attribute": "usage.last_at", "op": "is_empty", "channel": "sms"}, "condition.channel"),
    (
        {"attribute": "usage.last_at", "op": "is_empty", "channel": "app", "topic": "debt"},
        "condition.topic",
    ),
    ({"attribute": "billing.debt", "op": "gt", "value": 1, "sql": "1"}, "condition.sql"),
    ({"all": []}, "condition.all"),
    ({"all": [{"attribute": "billing.debt", "op": "gt", "value": 1}], "any": []}, "condition"),
    ({"all": {"attribute": "billing.debt"}}, "condition.all"),
    ([], "condition"),
    ({"attribute": "account.city", "op": "equals", "value": "Ки\x00їв"}, "condition.value"),
    ({"attribute": "account.city", "op": "in", "value": ["a"] * 1001}, "condition.value"),
    ({"attribute": "billing.debt", "op": "gt", "value": float("inf")}, "condition.value"),
    ({}, "condition"),
]


async def test_bad_trees_name_the_path(world) -> None:
    _, _, catalogue = world
    for tree, path in BAD_TREES:
        with pytest.raises(InvalidInput) as caught:
            parse(tree, catalogue)
        assert caught.value.field == path, tree


async def test_depth_and_size_limits(world) -> None:
    _, _, catalogue = world
    leaf = {"attribute": "billing.debt", "op": "gt", "value": 1}
    deep: Any = leaf
    for _ in range(MAX_DEPTH):
        deep = {"not": deep}
    with pytest.raises(InvalidInput, match="levels deep"):
        parse(deep, catalogue)
    wide = {"any": [{"all": [leaf] * 50}] * 5}
    with pytest.raises(InvalidInput, match="nodes"):
        parse(wide, catalogue)


# -- fuzz: random and hostile trees -------------------------------------------------------

HOSTILE_STRINGS = [
    "'; DROP TABLE clients; --",
    '" OR 1=1 --',
    "$1",
    "$$;SELECT pg_sleep(5);$$",
    "%_\\",
    "Кам'янське",
    "ʼ’‘`",
    "😀" * 50,
    "a" * 600,
    "\u202e\u0000",
    "NULL",
    "'",
    "\\x00",
    "1e309",
    "ARRAY[1]",
    ")",
    "UA-30') OR ('1'='1",
]


def _hostile_value(rng: random.Random) -> Any:
    return rng.choice(
        [
            rng.choice(HOSTILE_STRINGS),
            rng.randrange(-(10**20), 10**20),
            rng.random() * 1e16,
            True,
            None,
            [],
            [rng.choice(HOSTILE_STRINGS)] * rng.randrange(3),
            {"$ne": 1},
            [1, 2, 3],
            ["2024-01-01", "2023-01-01"],
            "2024-13-01",
            -5,
            10**6,
            list(range(rng.choice([2, 1500]))),
            float("nan"),
        ]
    )


def _good_value(attribute: Any, op: str, rng: random.Random) -> Any:
    kind = attribute.type
    if op in ("is_empty", "is_not_empty"):
        return None
    if op in ("older_than_days", "within_last_days"):
        return rng.randrange(0, 400)

    def one() -> Any:
        if kind == "number":
            return rng.choice([0, 50, 120.5, 900, rng.randrange(-100, 3000)])
        if kind == "date":
            return (today() - dt.timedelta(days=rng.randrange(-30, 5000))).isoformat()
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "enum":
            return rng.choice(attribute.values)
        if kind == "string_list" or attribute.code == "ext.app.nick":
            return rng.choice(["idp", "veteran", "vip", "eco", "олег", "x'y"])
        return rng.choice(CITIES + ["київ", "ЛЬВ", "кам’ян", "'; DROP TABLE x; --"])

    if op == "between":
        a, b = sorted([one(), one()])
        return [a, b]
    if op in ("in", "not_in"):
        return [one() for _ in range(rng.randrange(1, 4))]
    if op == "contains" and kind == "string_list":
        return one()
    return one()


def random_tree(
    catalogue: Catalogue, rng: random.Random, depth: int = 0, hostile: bool = False
) -> Any:
    roll = rng.random()
    if hostile and roll < 0.08:
        return rng.choice(
            [
                None,
                3,
                "all",
                [],
                {"all": None},
                {"not": []},
                {"any": [None]},
                {"attribute": rng.choice(HOSTILE_STRINGS), "op": "equals", "value": 1},
                {"attribute": "billing.debt", "op": rng.choice(HOSTILE_STRINGS), "value": 1},
            ]
        )
    if depth < 4 and roll < 0.35:
        key = rng.choice(["all", "any", "not"])
        if key == "not":
            return {"not": random_tree(catalogue, rng, depth + 1, hostile)}
        return {
            key: [
                random_tree(catalogue, rng, depth + 1, hostile) for _ in range(rng.randrange(1, 4))
            ]
        }
    attribute = rng.choice(list(catalogue.attributes.values()))
    op = rng.choice(attribute.operators)
    leaf: dict[str, Any] = {"attribute": attribute.code, "op": op}
    value = (
        _hostile_value(rng) if hostile and rng.random() < 0.5 else _good_value(attribute, op, rng)
    )
    if value is not None or (hostile and rng.random() < 0.1):
        leaf["value"] = value
    if attribute.source == "consent":
        leaf["channel"] = (
            rng.choice(["sms", "email"]) if not hostile or rng.random() < 0.9 else "x'"
        )
        leaf["topic"] = rng.choice(["marketing", "debt"])
    if attribute.source == "channel_usage":
        leaf["channel"] = (
            rng.choice(["app", "cabinet"]) if not hostile or rng.random() < 0.9 else ["app"]
        )
    return leaf


async def test_random_valid_trees_match_the_reference(world) -> None:
    conn, pop, catalogue = world
    rng = random.Random(20261122)
    checked = 0
    for _ in range(250):
        tree = random_tree(catalogue, rng)
        try:
            parse(tree, catalogue)
        except InvalidInput:
            continue  # e.g. 51 nodes by chance; the valid ones are what this test is about
        want = expected(tree, pop, catalogue)
        assert await run(conn, tree, catalogue) == want, tree
        checked += 1
    assert checked > 200


async def test_hostile_trees_are_refused_or_answered_correctly(world) -> None:
    conn, pop, catalogue = world
    rng = random.Random(4242)
    refused = answered = 0
    for _ in range(600):
        tree = random_tree(catalogue, rng, hostile=True)
        try:
            condition = parse(tree, catalogue)
        except InvalidInput as exc:
            assert exc.field.startswith("condition"), exc.field
            refused += 1
            continue
        # Whatever got through runs as SQL without error and means what it says.
        async with conn.transaction():
            assert await run(conn, tree, catalogue) == expected(tree, pop, catalogue), tree
            query = count_query(condition, catalogue, "sample", sample_percent=50.0)
            assert await conn.fetchval(query.sql, *query.params) >= 0
        answered += 1
    assert refused > 100 and answered > 50
    # Nothing was dropped or changed by any of it.
    assert await conn.fetchval("SELECT count(*) FROM clients") == len(pop.clients)


def test_values_are_never_in_the_sql() -> None:
    from crm.segments.catalogue import Attribute

    city = Attribute(
        "account.city", "Місто", "City", "string", ["equals", "in"], "account", source_column="city"
    )
    catalogue = Catalogue({"account.city": city}, {"debt": False})
    evil = "x'); DROP TABLE clients; --"
    query = client_ids(
        parse(
            {
                "any": [
                    {"attribute": "account.city", "op": "equals", "value": evil},
                    {"attribute": "account.city", "op": "in", "value": [evil]},
                ]
            },
            catalogue,
        ),
        catalogue,
    )
    assert evil not in query.sql and "DROP" not in query.sql
    assert query.params == [evil, [evil]]
    # Identifiers: a catalogue column that is not one is refused before any SQL is made.
    broken = Attribute(
        "account.city",
        "Місто",
        "City",
        "string",
        ["equals"],
        "account",
        source_column="city; DROP TABLE x",
    )
    bad_catalogue = Catalogue({"account.city": broken}, {})
    with pytest.raises(ValueError):
        client_ids(
            parse({"attribute": "account.city", "op": "equals", "value": "a"}, bad_catalogue),
            bad_catalogue,
        )


def test_random_strings_are_only_parameters() -> None:
    rng = random.Random(1)
    alphabet = string.printable + "ʼ’Їїєґ😀"
    from crm.segments.catalogue import Attribute

    city = Attribute(
        "account.city", "Місто", "City", "string", ["contains"], "account", source_column="city"
    )
    catalogue = Catalogue({"account.city": city}, {})
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 40)))
        if "\x00" in text:
            continue
        query = client_ids(
            parse({"attribute": "account.city", "op": "contains", "value": text}, catalogue),
            catalogue,
        )
        assert query.params == [text]


async def test_preview_estimates_from_a_sample_above_the_exact_limit(
    world, admin_conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crm.segments import store

    conn, pop, catalogue = world
    await admin_conn.execute("ANALYZE clients")
    tree = {
        "all": [
            {"attribute": "account.region", "op": "in", "value": ["UA-30", "UA-32"]},
            {"attribute": "billing.debt", "op": "gt", "value": 0},
        ]
    }
    exact = await store.preview(conn, tree)
    assert (exact.count, exact.exact, exact.sample_percent) == (
        len(expected(tree, pop, catalogue)),
        True,
        None,
    )
    # Above the limit the count comes from a sample of the clients' pages: all of them here
    monkeypatch.setattr(store, "EXACT_PREVIEW_LIMIT", 10)
    monkeypatch.setattr(store, "SAMPLE_CLIENTS", 10_000)
    sampled = await store.preview(conn, tree)
    assert (sampled.count, sampled.exact, sampled.sample_percent) == (exact.count, False, 100.0)
    # A smaller sample is an estimate, scaled up by the sampled share
    monkeypatch.setattr(store, "SAMPLE_CLIENTS", 40)
    estimate = await store.preview(conn, tree)
    assert estimate.sample_percent is not None
    assert not estimate.exact and 0 < estimate.sample_percent < 100
    assert 0 <= estimate.count <= len(pop.clients) * 100 / estimate.sample_percent
    # An exact count can still be asked for
    assert (await store.preview(conn, tree, exact=True)).count == exact.count
