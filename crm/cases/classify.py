"""Auto-classification (SR-04): admin-edited rules propose category, type and priority."""

from __future__ import annotations

from typing import Annotated

import asyncpg
import msgspec

from crm.cases.text import contains_any, normalise
from crm.cases.types import (
    CaseClassificationRule,
    CaseProposal,
    CaseType,
    Channel,
    ConsumerType,
    Priority,
)
from herald import audit
from herald.audit import Actor, Change
from herald.bounds import Id
from herald.errors import InvalidInput, NotFound

Keyword = Annotated[str, msgspec.Meta(min_length=2, max_length=100)]


class CaseRuleSpec(msgspec.Struct, forbid_unknown_fields=True):
    """A classification rule: conditions (all that are given must hold) and what it proposes."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    position: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0
    is_active: bool = True
    keywords: Annotated[list[Keyword], msgspec.Meta(max_length=100)] = []
    channels: list[Channel] = []
    consumer_types: list[ConsumerType] = []
    has_debt: bool | None = None
    identified: bool | None = None
    category_id: Id | None = None
    case_type: CaseType | None = None
    priority: Priority | None = None


class ClientAttributes(msgspec.Struct, frozen=True):
    consumer_types: frozenset[str] = frozenset()
    has_debt: bool = False


NO_PROPOSAL = CaseProposal(None, None, None, None)

_SELECT = """
SELECT id, name, position, is_active, keywords, channels, consumer_types, has_debt, identified,
       category_id, case_type, priority, created_at, updated_at
FROM case_classification_rules
"""


async def client_attributes(conn: asyncpg.Connection, client_id: int) -> ClientAttributes:
    """The client's consumer types and whether any account has debt (last billing snapshot)."""
    row = await conn.fetchrow(
        """
        SELECT coalesce(array_agg(DISTINCT a.consumer_type), '{}') AS consumer_types,
               coalesce(bool_or(b.debt > 0), false) AS has_debt
        FROM accounts a LEFT JOIN billing_snapshots b ON b.account_id = a.id
        WHERE a.client_id = $1
        """,
        client_id,
    )
    return ClientAttributes(frozenset(row["consumer_types"]), row["has_debt"])


def _matches(
    rule: CaseClassificationRule, text: str, channel: str, identified: bool, attrs: ClientAttributes
) -> bool:
    if rule.keywords and not contains_any(text, rule.keywords):
        return False
    if rule.channels and channel not in rule.channels:
        return False
    if rule.identified is not None and rule.identified != identified:
        return False
    if rule.consumer_types and not attrs.consumer_types & set(rule.consumer_types):
        return False
    if rule.has_debt is not None and (not identified or rule.has_debt != attrs.has_debt):
        return False
    return True


def propose(
    rules: list[CaseClassificationRule],
    *,
    subject: str | None,
    text: str,
    channel: str,
    identified: bool,
    attrs: ClientAttributes,
) -> CaseProposal:
    """The proposal of the first active rule (by position, then id) that matches."""
    normalised = normalise(f"{subject or ''} {text}")
    for rule in rules:
        if rule.is_active and _matches(rule, normalised, channel, identified, attrs):
            return CaseProposal(rule.category_id, rule.case_type, rule.priority, rule.id)
    return NO_PROPOSAL


async def list_rules(conn: asyncpg.Connection) -> list[CaseClassificationRule]:
    rows = await conn.fetch(_SELECT + " ORDER BY position, id")
    return [CaseClassificationRule(**dict(r)) for r in rows]


async def active_rules(conn: asyncpg.Connection) -> list[CaseClassificationRule]:
    rows = await conn.fetch(_SELECT + " WHERE is_active ORDER BY position, id")
    return [CaseClassificationRule(**dict(r)) for r in rows]


async def _get(conn: asyncpg.Connection, rule_id: int) -> CaseClassificationRule:
    row = await conn.fetchrow(_SELECT + " WHERE id = $1", rule_id)
    if row is None:
        raise NotFound(f"no classification rule {rule_id}")
    return CaseClassificationRule(**dict(row))


async def _check(conn: asyncpg.Connection, spec: CaseRuleSpec) -> list[str]:
    if spec.category_id is None and spec.case_type is None and spec.priority is None:
        raise InvalidInput("category_id", "a rule must propose a category, a type or a priority")
    if spec.category_id is not None and not await conn.fetchval(
        "SELECT is_active FROM case_categories WHERE id = $1", spec.category_id
    ):
        raise InvalidInput("category_id", f"no active category {spec.category_id}")
    keywords = [normalise(k) for k in spec.keywords]
    for i, keyword in enumerate(keywords):
        if len(keyword) < 2:
            raise InvalidInput(f"keywords[{i}]", "a keyword needs at least two letters or digits")
    return sorted(set(keywords), key=keywords.index)


def _values(spec: CaseRuleSpec, keywords: list[str]) -> tuple[object, ...]:
    return (
        spec.name,
        spec.position,
        spec.is_active,
        keywords,
        list(spec.channels),
        list(spec.consumer_types),
        spec.has_debt,
        spec.identified,
        spec.category_id,
        spec.case_type,
        spec.priority,
    )


async def create_rule(
    conn: asyncpg.Connection, actor: Actor, spec: CaseRuleSpec
) -> CaseClassificationRule:
    async with conn.transaction():
        keywords = await _check(conn, spec)
        rule_id = await conn.fetchval(
            """
            INSERT INTO case_classification_rules (name, position, is_active, keywords, channels,
                consumer_types, has_debt, identified, category_id, case_type, priority)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id
            """,
            *_values(spec, keywords),
        )
        rule = await _get(conn, rule_id)
        await audit.record(
            conn, actor, [Change("case_rule", str(rule_id), "create", None, None, _auditable(rule))]
        )
        return rule


def _auditable(rule: CaseClassificationRule) -> dict[str, object]:
    data = msgspec.to_builtins(rule)
    for key in ("id", "created_at", "updated_at"):
        data.pop(key)
    return data


async def update_rule(
    conn: asyncpg.Connection, actor: Actor, rule_id: int, spec: CaseRuleSpec
) -> CaseClassificationRule:
    async with conn.transaction():
        before = await _get(conn, rule_id)
        keywords = await _check(conn, spec)
        await conn.execute(
            """
            UPDATE case_classification_rules SET name = $2, position = $3, is_active = $4,
                   keywords = $5, channels = $6, consumer_types = $7, has_debt = $8,
                   identified = $9, category_id = $10, case_type = $11, priority = $12,
                   updated_at = herald_now()
            WHERE id = $1
            """,
            rule_id,
            *_values(spec, keywords),
        )
        after = await _get(conn, rule_id)
        await audit.record(
            conn,
            actor,
            audit.field_changes("case_rule", rule_id, _auditable(before), _auditable(after)),
        )
        return after


async def delete_rule(conn: asyncpg.Connection, actor: Actor, rule_id: int) -> None:
    async with conn.transaction():
        before = await _get(conn, rule_id)
        await conn.execute("DELETE FROM case_classification_rules WHERE id = $1", rule_id)
        await audit.record(
            conn,
            actor,
            [Change("case_rule", str(rule_id), "delete", None, _auditable(before), None)],
        )
