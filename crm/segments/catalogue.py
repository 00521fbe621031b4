"""The attribute catalogue: what a segment condition may test, as data (segment_attributes).

Built-in attributes name a column of clients, accounts, billing_snapshots or
channel_usage (per digital channel); consent is computed from consents and the topic
default; external attributes (declared through the
API by other systems, no code change) keep their values in client_attributes, one typed
column per attribute type.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Literal

import asyncpg
import msgspec

from herald import audit
from herald.bounds import Id
from herald.errors import Conflict, InvalidInput, NotFound

AttributeType = Literal["string", "number", "date", "boolean", "enum", "string_list"]
Source = Literal["client", "account", "billing", "consent", "channel_usage", "external"]

# Every operator of each type; a catalogue row may allow a subset.
OPERATORS_BY_TYPE: dict[str, frozenset[str]] = {
    "string": frozenset(
        {"equals", "not_equals", "in", "not_in", "contains", "is_empty", "is_not_empty"}
    ),
    "number": frozenset(
        {
            "equals",
            "not_equals",
            "in",
            "not_in",
            "between",
            "lt",
            "lte",
            "gt",
            "gte",
            "is_empty",
            "is_not_empty",
        }
    ),
    "date": frozenset(
        {
            "equals",
            "not_equals",
            "between",
            "lt",
            "lte",
            "gt",
            "gte",
            "older_than_days",
            "within_last_days",
            "is_empty",
            "is_not_empty",
        }
    ),
    "boolean": frozenset({"equals", "is_empty", "is_not_empty"}),
    "enum": frozenset({"equals", "not_equals", "in", "not_in", "is_empty", "is_not_empty"}),
    "string_list": frozenset({"contains", "in", "is_empty", "is_not_empty"}),
}
ALL_OPERATORS = frozenset().union(*OPERATORS_BY_TYPE.values())

# The consent attribute is qualified by a channel (the consents.channel CHECK) and a topic.
CONSENT_CHANNELS = ("sms", "viber", "email", "push", "telegram", "voice")
# Channel usage is qualified by a digital channel (the channel_usage.channel CHECK of 0011).
USAGE_CHANNELS = ("cabinet", "app", "shop", "chatbot")
# The value column of client_attributes for each type (identifiers from code, not input).
VALUE_COLUMN = {
    "string": "value_text",
    "enum": "value_text",
    "number": "value_number",
    "date": "value_date",
    "boolean": "value_bool",
    "string_list": "value_list",
}

EXTERNAL_CODE = re.compile(r"^ext\.[a-z][a-z0-9_]{0,30}\.[a-z][a-z0-9_]{0,40}$")
MAX_TEXT = 500
MAX_NUMBER = 1e15


class Qualifier(msgspec.Struct, frozen=True):
    """An extra argument a condition on the attribute must give (consent: channel, topic)."""

    name: str
    values: list[str]


class Attribute(msgspec.Struct, frozen=True):
    code: str
    label_uk: str
    label_en: str
    type: str
    operators: list[str]
    source: str
    values: list[str] | None = None
    qualifiers: list[Qualifier] = []
    description: str = ""
    source_column: str | None = None


class Catalogue(msgspec.Struct, frozen=True):
    """The attributes by code, and each topic's default (for consent conditions)."""

    attributes: dict[str, Attribute]
    topic_requires_opt_in: dict[str, bool]


_LOAD = """
SELECT a.code, a.label_uk, a.label_en, a.type, a.operators, a.source, a.source_column,
       a.description,
       CASE a.values_from
           WHEN 'regions' THEN (SELECT array_agg(code ORDER BY code) FROM regions)
           WHEN 'tariffs' THEN (SELECT array_agg(code ORDER BY code) FROM tariffs)
           ELSE a.enum_values END AS values
FROM segment_attributes a
ORDER BY a.source = 'external', a.code
"""


async def load(conn: asyncpg.Connection) -> Catalogue:
    """The whole catalogue, with enum values of reference tables resolved (two queries)."""
    topics = {
        r["code"]: r["requires_opt_in"]
        for r in await conn.fetch("SELECT code, requires_opt_in FROM message_topics ORDER BY code")
    }
    attributes: dict[str, Attribute] = {}
    for r in await conn.fetch(_LOAD):
        qualifiers = {
            "consent": [
                Qualifier("channel", list(CONSENT_CHANNELS)),
                Qualifier("topic", list(topics)),
            ],
            "channel_usage": [Qualifier("channel", list(USAGE_CHANNELS))],
        }.get(r["source"], [])
        attributes[r["code"]] = Attribute(
            r["code"],
            r["label_uk"],
            r["label_en"],
            r["type"],
            list(r["operators"]),
            r["source"],
            list(r["values"]) if r["values"] is not None else None,
            qualifiers,
            r["description"],
            r["source_column"],
        )
    return Catalogue(attributes, topics)


class AttributeDeclaration(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A new external attribute: ``ext.<system>.<name>``, its labels and type."""

    code: str
    label_uk: str
    label_en: str
    type: AttributeType
    operators: list[str] | None = None
    values: list[str] | None = None
    description: str = ""


async def declare(
    conn: asyncpg.Connection, actor: audit.Actor, spec: AttributeDeclaration
) -> Attribute:
    """Add an external attribute to the catalogue (journalled); usable at once."""
    if not EXTERNAL_CODE.match(spec.code):
        raise InvalidInput(
            "code",
            "an external attribute is named ext.<system>.<name> "
            "(lower-case latin letters, digits, underscores)",
        )
    for name in ("label_uk", "label_en"):
        if not 1 <= len(getattr(spec, name).strip()) <= 200 or "\x00" in getattr(spec, name):
            raise InvalidInput(name, "a label of 1 to 200 characters is required")
    allowed = OPERATORS_BY_TYPE[spec.type]
    operators = sorted(set(spec.operators)) if spec.operators is not None else sorted(allowed)
    bad = [op for op in operators if op not in allowed]
    if bad or not operators:
        raise InvalidInput(
            "operators",
            f"type {spec.type} allows {', '.join(sorted(allowed))}; "
            f"not {', '.join(bad) or 'an empty list'}",
        )
    values: list[str] | None = None
    if spec.type == "enum":
        if not spec.values or len(spec.values) > 500 or len(set(spec.values)) != len(spec.values):
            raise InvalidInput("values", "an enum needs 1 to 500 distinct values")
        for i, v in enumerate(spec.values):
            if not 1 <= len(v) <= 200 or "\x00" in v:
                raise InvalidInput(f"values[{i}]", "a value of 1 to 200 characters is required")
        values = list(spec.values)
    elif spec.values is not None:
        raise InvalidInput("values", "only an enum attribute lists its values")
    if len(spec.description) > 2000 or "\x00" in spec.description:
        raise InvalidInput("description", "at most 2000 characters")
    async with conn.transaction():
        try:
            await conn.execute(
                "INSERT INTO segment_attributes (code, label_uk, label_en, type, operators, "
                "enum_values, source, description, created_by) "
                "VALUES ($1, $2, $3, $4, $5, $6, 'external', $7, $8)",
                spec.code,
                spec.label_uk.strip(),
                spec.label_en.strip(),
                spec.type,
                operators,
                values,
                spec.description,
                actor.login,
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(f"attribute {spec.code} already exists") from None
        await audit.record(
            conn,
            actor,
            [
                audit.Change(
                    "segment_attribute",
                    spec.code,
                    "create",
                    None,
                    None,
                    {"type": spec.type, "operators": operators, "values": values},
                )
            ],
        )
    return Attribute(
        spec.code,
        spec.label_uk.strip(),
        spec.label_en.strip(),
        spec.type,
        operators,
        "external",
        values,
        [],
        spec.description,
    )


def check_value(attribute: Attribute, value: Any, path: str) -> Any:
    """One value of the attribute's type as the database takes it; InvalidInput naming ``path``."""
    kind = attribute.type
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(path, "must be a number")
        if not math.isfinite(value) or abs(value) >= MAX_NUMBER:
            raise InvalidInput(path, f"must be a finite number below {MAX_NUMBER:.0e} in size")
        return Decimal(value) if isinstance(value, int) else Decimal(repr(value))
    if kind == "boolean":
        if not isinstance(value, bool):
            raise InvalidInput(path, "must be true or false")
        return value
    if kind == "date":
        if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise InvalidInput(path, "must be a date YYYY-MM-DD")
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise InvalidInput(path, f"{value!r} is not a date") from None
    if kind == "string_list":
        if not isinstance(value, list) or len(value) > 100:
            raise InvalidInput(path, "must be a list of at most 100 strings")
        return [check_text(v, f"{path}[{i}]") for i, v in enumerate(value)]
    text = check_text(value, path)
    if kind == "enum" and attribute.values is not None and text not in attribute.values:
        raise InvalidInput(path, f"{text!r} is not one of {', '.join(attribute.values[:40])}")
    return text


def check_text(value: Any, path: str) -> str:
    """A string PostgreSQL can store (no NUL), of at most MAX_TEXT characters."""
    if not isinstance(value, str):
        raise InvalidInput(path, "must be a string")
    if len(value) > MAX_TEXT:
        raise InvalidInput(path, f"at most {MAX_TEXT} characters")
    if "\x00" in value:
        raise InvalidInput(path, "must not contain a NUL character")
    return value


class AttributeValue(msgspec.Struct, forbid_unknown_fields=True):
    """One client's value; null removes it."""

    client_id: Id
    value: Any = None


async def import_values(
    conn: asyncpg.Connection, actor: audit.Actor, code: str, values: Sequence[AttributeValue]
) -> tuple[int, int]:
    """Set (or with null remove) values of an external attribute; returns (set, removed).

    One statement each for the upserts and the removals; journalled as one import entry.
    """
    catalogue = await load(conn)
    attribute = catalogue.attributes.get(code)
    if attribute is None:
        raise NotFound(f"no attribute {code}")
    if attribute.source != "external":
        raise InvalidInput("code", f"{code} is built in; its values come from its source table")
    column = VALUE_COLUMN[attribute.type]
    upsert_ids: list[int] = []
    upsert_values: list[Any] = []
    remove_ids: list[int] = []
    seen: set[int] = set()
    for i, item in enumerate(values):
        if not 1 <= item.client_id <= 2**63 - 1:
            raise InvalidInput(f"values[{i}].client_id", "must be a positive integer")
        if item.client_id in seen:
            raise InvalidInput(f"values[{i}].client_id", f"client {item.client_id} appears twice")
        seen.add(item.client_id)
        if item.value is None:
            remove_ids.append(item.client_id)
        else:
            upsert_ids.append(item.client_id)
            upsert_values.append(check_value(attribute, item.value, f"values[{i}].value"))
    async with conn.transaction():
        if upsert_ids:
            known = {
                r["id"]
                for r in await conn.fetch(
                    "SELECT id FROM clients WHERE id = ANY($1::bigint[])", upsert_ids
                )
            }
            missing = [i for i, c in enumerate(upsert_ids) if c not in known]
            if missing:
                raise InvalidInput(
                    "values",
                    f"no client {upsert_ids[missing[0]]} ({len(missing)} unknown client ids)",
                )
            if attribute.type == "string_list":
                # Arrays of unequal length do not unnest side by side: encode each list as JSON.
                await conn.execute(
                    f"""
                    INSERT INTO client_attributes (code, client_id, {column})
                    SELECT $1, t.id, ARRAY(SELECT jsonb_array_elements_text(t.v::jsonb))
                    FROM unnest($2::bigint[], $3::text[]) AS t(id, v)
                    ON CONFLICT (code, client_id) DO UPDATE
                        SET {column} = excluded.{column}, updated_at = herald_now()
                    """,
                    code,
                    upsert_ids,
                    [json.dumps(v) for v in upsert_values],
                )
            else:
                sql_type = {
                    "value_text": "text",
                    "value_number": "numeric",
                    "value_date": "date",
                    "value_bool": "boolean",
                }[column]
                await conn.execute(
                    f"""
                    INSERT INTO client_attributes (code, client_id, {column})
                    SELECT $1, t.id, t.v FROM unnest($2::bigint[], $3::{sql_type}[]) AS t(id, v)
                    ON CONFLICT (code, client_id) DO UPDATE
                        SET {column} = excluded.{column}, updated_at = herald_now()
                    """,
                    code,
                    upsert_ids,
                    upsert_values,
                )
        removed = 0
        if remove_ids:
            removed = len(
                await conn.fetch(
                    "DELETE FROM client_attributes WHERE code = $1 AND client_id = ANY($2::bigint[]) "
                    "RETURNING client_id",
                    code,
                    remove_ids,
                )
            )
        await audit.record(
            conn,
            actor,
            [
                audit.Change(
                    "segment_attribute",
                    code,
                    "import",
                    None,
                    None,
                    {"set": len(upsert_ids), "removed": removed},
                )
            ],
        )
    return len(upsert_ids), removed


async def value_names(conn: asyncpg.Connection) -> dict[str, tuple[str, str]]:
    """The Ukrainian and English names of the region and tariff codes that attributes
    take their values from (for the builder's lists)."""
    rows = await conn.fetch(
        "SELECT code, name_uk, name_en FROM regions UNION ALL "
        "SELECT code, name_uk, name_en FROM tariffs"
    )
    return {r["code"]: (r["name_uk"], r["name_en"]) for r in rows}
