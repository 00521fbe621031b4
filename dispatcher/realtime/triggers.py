"""Trigger rules (IC-06): an event type and conditions -> a template version, a chain, a policy.

Conditions are data, evaluated in Python by a fixed table of operators (never eval, never
SQL): on the event's ``data`` by a dotted field path, and on the client by a small set of
attributes read in one query per batch of events (region, consumer type, debt...). A rule
pins a template version; a save makes a new rule version and journals each changed field.
The contact policy (at most ``max_messages`` per client in ``period_seconds``, at least
``min_interval_seconds`` apart) is enforced by ``dispatcher.realtime.intake`` under a lock.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from msgspec import Meta

from dispatcher.envelopes import Chain
from herald import audit
from herald.audit import Actor, Change
from herald.bounds import Id, Int64, Version
from herald.errors import InvalidInput, NotFound

EventType = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$", max_length=100)]
FieldPath = Annotated[
    str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+){0,9}$", max_length=200)
]
Operator = Literal[
    "eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "contains", "exists", "not_exists"
]
ClientAttribute = Literal[
    "region",
    "consumer_type",
    "account_status",
    "has_debt",
    "debt",
    "destroyed_housing",
    "registers",
]

_NO_VALUE = frozenset({"exists", "not_exists"})
_LISTS = frozenset({"in", "not_in"})
_ORDER = frozenset({"gt", "gte", "lt", "lte"})
# What each client attribute may be compared with.
_CLIENT_OPS: dict[str, frozenset[str]] = {
    "region": frozenset({"eq", "ne", "in", "not_in"}),
    "consumer_type": frozenset({"eq", "ne", "in", "not_in"}),
    "account_status": frozenset({"eq", "ne", "in", "not_in"}),
    "has_debt": frozenset({"eq"}),
    "destroyed_housing": frozenset({"eq"}),
    "debt": frozenset({"eq", "ne", "gt", "gte", "lt", "lte"}),
    "registers": frozenset({"contains"}),
}
_CLIENT_TYPES: dict[str, type | tuple[type, ...]] = {
    "region": str,
    "consumer_type": str,
    "account_status": str,
    "has_debt": bool,
    "destroyed_housing": bool,
    "debt": (int, float),
    "registers": str,
}

Scalar = str | Int64 | float | bool | None
PolicyScope = Literal["rule", "client"]


class Condition(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A test of one field of the event's data, e.g. {"path": "amount", "op": "gte", "value": 100}."""

    path: FieldPath
    op: Operator
    value: Scalar | list[Scalar] = None


class ClientCondition(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A test of the client (their account named by the event, else their primary one)."""

    attribute: ClientAttribute
    op: Operator
    value: Scalar | list[Scalar] = None


class TriggerRuleSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What an administrator or marketer sets for a trigger rule."""

    name: Annotated[str, Meta(min_length=1, max_length=200)]
    event_type: EventType
    template_id: Id
    template_version: Version | None = None
    channel_chain: Chain = msgspec.field(default_factory=lambda: ["viber", "sms"])
    conditions: Annotated[list[Condition], Meta(max_length=20)] = []
    client_conditions: Annotated[list[ClientCondition], Meta(max_length=20)] = []
    delay_seconds: Annotated[int, Meta(ge=0, le=7 * 86400)] = 0
    max_messages: Annotated[int, Meta(ge=1, le=1000)] | None = None
    period_seconds: Annotated[int, Meta(ge=60, le=366 * 86400)] | None = None
    min_interval_seconds: Annotated[int, Meta(ge=1, le=366 * 86400)] | None = None
    receipt_timeout_seconds: Annotated[int, Meta(ge=10, le=7 * 86400)] = 900
    is_active: bool = True
    # What the policy counts: this rule's messages to the client, or all its triggered ones.
    policy_scope: PolicyScope = "rule"


class TriggerRule(msgspec.Struct, frozen=True):
    id: int
    version: int
    name: str
    event_type: str
    template_id: int
    template_version: int
    channel_chain: list[str]
    conditions: list[Condition]
    client_conditions: list[ClientCondition]
    delay_seconds: int
    max_messages: int | None
    period_seconds: int | None
    min_interval_seconds: int | None
    receipt_timeout_seconds: int
    is_active: bool
    topic: str
    created_at: dt.datetime
    updated_at: dt.datetime
    policy_scope: PolicyScope = "rule"


# -- evaluation -------------------------------------------------------------------------

_MISSING = object()


def resolve(data: Any, path: str) -> Any:
    """The value at a dotted path of the event's data (list items by index); _MISSING if none."""
    current = data
    for part in path.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return _MISSING
    return current


def _number(value: Any) -> bool:
    return isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool)


def _equal(a: Any, b: Any) -> bool:
    if _number(a) and _number(b):
        return decimal.Decimal(str(a)) == decimal.Decimal(str(b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return type(a) is type(b) and a == b


def _compare(op: str, a: Any, b: Any) -> bool:
    if _number(a) and _number(b):
        x, y = decimal.Decimal(str(a)), decimal.Decimal(str(b))
    elif isinstance(a, str) and isinstance(b, str):  # ISO dates and times order as text
        x, y = a, b  # type: ignore[assignment]  # two str, compared as text below
    else:
        return False
    return {"gt": x > y, "gte": x >= y, "lt": x < y, "lte": x <= y}[op]


def test(op: str, actual: Any, expected: Any) -> bool:
    """One condition; a value of the wrong type or a missing field fails it (never raises)."""
    if op == "exists":
        return actual is not _MISSING and actual is not None
    if op == "not_exists":
        return actual is _MISSING or actual is None
    if actual is _MISSING:
        return op in ("ne", "not_in")
    if op == "eq":
        return _equal(actual, expected)
    if op == "ne":
        return not _equal(actual, expected)
    if op in _ORDER:
        return _compare(op, actual, expected)
    if op == "in":
        return any(_equal(actual, v) for v in expected)
    if op == "not_in":
        return not any(_equal(actual, v) for v in expected)
    if op == "contains":
        if isinstance(actual, str) and isinstance(expected, str):
            return expected in actual
        if isinstance(actual, list):
            return any(_equal(item, expected) for item in actual)
        return False
    raise ValueError(f"unknown operator {op!r}")


def matches(rule: TriggerRule, data: Mapping[str, Any], client: Mapping[str, Any]) -> bool:
    """Whether an event's data and its client meet every condition of the rule."""
    return all(test(c.op, resolve(data, c.path), c.value) for c in rule.conditions) and all(
        test(c.op, client.get(c.attribute, _MISSING), c.value) for c in rule.client_conditions
    )


_CLIENTS = """
SELECT n.o, c.id AS client_id, a.id AS account_id, a.region_code AS region, a.consumer_type,
       a.status AS account_status, coalesce(b.debt, 0) AS debt, a.destroyed_housing,
       a.registers
FROM unnest($1::bigint[], $2::bigint[]) WITH ORDINALITY AS n(c, a, o)
JOIN clients c ON c.id = n.c
LEFT JOIN LATERAL (
    SELECT * FROM accounts a WHERE a.client_id = c.id AND (n.a IS NULL OR a.id = n.a)
    ORDER BY a.status = 'active' DESC, a.id LIMIT 1) a ON true
LEFT JOIN billing_snapshots b ON b.account_id = a.id
"""


async def client_attributes(
    conn: asyncpg.Connection, pairs: Sequence[tuple[int, int | None]]
) -> list[dict[str, Any] | None]:
    """Attributes of (client, account or None: the primary one), in order; None: no such client."""
    if not pairs:
        return []
    rows = await conn.fetch(_CLIENTS, [c for c, _ in pairs], [a for _, a in pairs])
    found: list[dict[str, Any] | None] = [None] * len(pairs)
    for row in rows:
        attrs = dict(row)
        index = attrs.pop("o") - 1
        attrs["debt"] = float(attrs["debt"]) if attrs["debt"] is not None else 0.0
        attrs["has_debt"] = attrs["debt"] > 0
        if attrs["account_id"] is None:  # a client without accounts: only has_debt/debt known
            for key in (
                "region",
                "consumer_type",
                "account_status",
                "destroyed_housing",
                "registers",
            ):
                attrs.pop(key)
        found[index] = attrs
    return found


# -- validation and store ---------------------------------------------------------------


def _check_conditions(spec: TriggerRuleSpec) -> None:
    for i, c in enumerate(spec.conditions):
        _check_value(f"conditions[{i}].value", c.op, c.value)
    for i, cc in enumerate(spec.client_conditions):
        where = f"client_conditions[{i}]"
        if cc.op not in _CLIENT_OPS[cc.attribute]:
            raise InvalidInput(
                f"{where}.op",
                f"{cc.attribute} takes one of: {', '.join(sorted(_CLIENT_OPS[cc.attribute]))}",
            )
        _check_value(f"{where}.value", cc.op, cc.value)
        wanted = _CLIENT_TYPES[cc.attribute]
        values = cc.value if isinstance(cc.value, list) else [cc.value]
        for v in values:
            if not isinstance(v, wanted) or (wanted is not bool and isinstance(v, bool)):
                kind = (
                    "a number" if cc.attribute == "debt" else getattr(wanted, "__name__", "a value")
                )
                raise InvalidInput(f"{where}.value", f"{cc.attribute} is compared with {kind}")


def _check_value(field: str, op: str, value: Any) -> None:
    if op in _NO_VALUE:
        if value is not None:
            raise InvalidInput(field, f"'{op}' takes no value")
        return
    if op in _LISTS:
        if not isinstance(value, list) or not 1 <= len(value) <= 1000:
            raise InvalidInput(field, f"'{op}' takes a list of 1 to 1000 values")
        return
    if isinstance(value, list):
        raise InvalidInput(field, f"'{op}' takes one value, not a list")
    if value is None:
        raise InvalidInput(field, f"'{op}' needs a value")
    if op in _ORDER and not (_number(value) or isinstance(value, str)):
        raise InvalidInput(field, f"'{op}' compares with a number or a text (e.g. an ISO date)")


def _check_spec(spec: TriggerRuleSpec) -> None:
    if len(set(spec.channel_chain)) != len(spec.channel_chain):
        raise InvalidInput("channel_chain", "a channel may appear only once in the chain")
    if (spec.max_messages is None) != (spec.period_seconds is None):
        raise InvalidInput("max_messages", "give max_messages and period_seconds together")
    if spec.policy_scope == "client" and not (spec.max_messages or spec.min_interval_seconds):
        raise InvalidInput(
            "policy_scope",
            "a client-wide policy needs max_messages and period_seconds or min_interval_seconds",
        )
    _check_conditions(spec)


async def _pin_version(conn: asyncpg.Connection, spec: TriggerRuleSpec) -> int:
    row = await conn.fetchrow(
        "SELECT current_version FROM message_templates WHERE id = $1", spec.template_id
    )
    if row is None:
        raise InvalidInput("template_id", f"template {spec.template_id} does not exist")
    version = spec.template_version or row["current_version"]
    variants = await conn.fetchval(
        "SELECT variants FROM message_template_versions WHERE template_id = $1 AND version = $2",
        spec.template_id,
        version,
    )
    if variants is None:
        raise InvalidInput(
            "template_version", f"template {spec.template_id} has no version {version}"
        )
    missing = [c for c in spec.channel_chain if not variants.get(c)]
    if missing:
        raise InvalidInput(
            "channel_chain",
            f"template {spec.template_id} v{version} has no variant for: {', '.join(missing)}",
        )
    return version


_SELECT = """
SELECT r.id, r.version, r.name, r.event_type, r.template_id, r.template_version, r.channel_chain,
       r.conditions, r.client_conditions, r.delay_seconds, r.max_messages, r.period_seconds,
       r.min_interval_seconds, r.receipt_timeout_seconds, r.is_active, t.topic, r.created_at,
       r.updated_at, r.policy_scope
FROM trigger_rules r JOIN message_templates t ON t.id = r.template_id
"""


def _rule(row: asyncpg.Record) -> TriggerRule:
    return msgspec.convert(dict(row), TriggerRule)


def _stored(spec: TriggerRuleSpec, version: int) -> dict[str, Any]:
    """The rule's settings as journalled (and compared field by field on update)."""
    data: dict[str, Any] = msgspec.to_builtins(spec)
    data["template_version"] = version
    return data


_FIELDS = (
    "name",
    "event_type",
    "template_id",
    "template_version",
    "channel_chain",
    "conditions",
    "client_conditions",
    "delay_seconds",
    "max_messages",
    "period_seconds",
    "min_interval_seconds",
    "receipt_timeout_seconds",
    "is_active",
    "policy_scope",
)


async def get_rule(conn: asyncpg.Connection, rule_id: int) -> TriggerRule:
    row = await conn.fetchrow(_SELECT + " WHERE r.id = $1", rule_id)
    if row is None:
        raise NotFound(f"trigger rule {rule_id} does not exist")
    return _rule(row)


async def list_rules(
    conn: asyncpg.Connection, *, event_type: str | None = None, active_only: bool = False
) -> list[TriggerRule]:
    rows = await conn.fetch(
        _SELECT + " WHERE ($1::text IS NULL OR r.event_type = $1) "
        "AND (NOT $2 OR r.is_active) ORDER BY r.id",
        event_type,
        active_only,
    )
    return [_rule(r) for r in rows]


async def active_rules(
    conn: asyncpg.Connection, event_types: Sequence[str]
) -> dict[str, list[TriggerRule]]:
    """The active rules of these event types, by type, in id order (one query)."""
    rows = await conn.fetch(
        _SELECT + " WHERE r.is_active AND r.event_type = ANY($1::text[]) ORDER BY r.id",
        list(set(event_types)),
    )
    found: dict[str, list[TriggerRule]] = {}
    for row in rows:
        found.setdefault(row["event_type"], []).append(_rule(row))
    return found


async def create_rule(conn: asyncpg.Connection, actor: Actor, spec: TriggerRuleSpec) -> TriggerRule:
    _check_spec(spec)
    async with conn.transaction():
        version = await _pin_version(conn, spec)
        data = _stored(spec, version)
        rule_id = await conn.fetchval(
            """
            INSERT INTO trigger_rules (name, event_type, template_id, template_version,
                channel_chain, conditions, client_conditions, delay_seconds, max_messages,
                period_seconds, min_interval_seconds, receipt_timeout_seconds, is_active,
                policy_scope, created_by)
            VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, $10, $11, $12, $13, $14,
                    $15)
            RETURNING id
            """,
            *(data[f] for f in _FIELDS),
            actor.id,
        )
        await audit.record(
            conn, actor, [Change("trigger_rule", str(rule_id), "create", None, None, data)]
        )
        return await get_rule(conn, rule_id)


async def update_rule(
    conn: asyncpg.Connection, actor: Actor, rule_id: int, spec: TriggerRuleSpec
) -> TriggerRule:
    """Replace a rule's settings: a new rule version, each changed field journalled."""
    _check_spec(spec)
    async with conn.transaction():
        before = await conn.fetchrow(_SELECT + " WHERE r.id = $1 FOR UPDATE OF r", rule_id)
        if before is None:
            raise NotFound(f"trigger rule {rule_id} does not exist")
        version = await _pin_version(conn, spec)
        data = _stored(spec, version)
        old = msgspec.to_builtins(_rule(before))
        changes = audit.field_changes("trigger_rule", rule_id, old, data)
        if changes:
            await conn.execute(
                """
                UPDATE trigger_rules SET name = $2, event_type = $3, template_id = $4,
                    template_version = $5, channel_chain = $6, conditions = $7::jsonb,
                    client_conditions = $8::jsonb, delay_seconds = $9, max_messages = $10,
                    period_seconds = $11, min_interval_seconds = $12,
                    receipt_timeout_seconds = $13, is_active = $14, policy_scope = $15,
                    version = version + 1, updated_at = herald_now()
                WHERE id = $1
                """,
                rule_id,
                *(data[f] for f in _FIELDS),
            )
            changes.append(
                Change(
                    "trigger_rule",
                    str(rule_id),
                    "update",
                    "version",
                    before["version"],
                    before["version"] + 1,
                )
            )
            await audit.record(conn, actor, changes)
        return await get_rule(conn, rule_id)
