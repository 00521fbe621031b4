"""Condition trees to parameterised SQL that selects the matching client ids.

Identifiers come only from here (table aliases) and from the catalogue's built-in
columns (checked against a pattern when loaded); every value given by a user is a ``$n``
parameter with an explicit type. Three shapes of the same query:

* ``all``: the whole population, for counts and materialisation. Driven by accounts
  when the tree needs them and a client without accounts cannot match, else by clients.
  Client-level sets (consents, channel usage, external attributes) are uncorrelated ``IN`` subqueries,
  which PostgreSQL runs once as a hashed subplan.
* ``ids``: only the given clients, for the incremental refresh: correlated lookups by
  index instead of hashing whole sets.
* ``sample``: clients ``TABLESAMPLE SYSTEM`` (a percentage of pages), for an estimate of a
  count over millions in well under a second.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from crm.segments.catalogue import VALUE_COLUMN, Catalogue
from crm.segments.conditions import AllOf, AnyOf, Condition, Leaf, Node, Not

Shape = Literal["all", "ids", "sample"]

_ALIAS = {"client": "c", "account": "a", "billing": "b"}
_COLUMN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_TODAY = "(herald_now() AT TIME ZONE herald_business_tz())::date"
_SQL_TYPE = {
    "string": "text",
    "enum": "text",
    "number": "numeric",
    "date": "date",
    "boolean": "boolean",
    "string_list": "text",
}
_COMPARE = {"equals": "=", "not_equals": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}


@dataclass
class Query:
    """SQL text and its parameters; ``param`` appends one more and returns its placeholder."""

    sql: str = ""
    params: list[Any] = field(default_factory=list)

    def param(self, value: Any, sql_type: str) -> str:
        self.params.append(value)
        return f"${len(self.params)}::{sql_type}"


def client_ids(
    condition: Condition,
    catalogue: Catalogue,
    shape: Shape = "all",
    *,
    ids: list[int] | None = None,
    sample_percent: float | None = None,
) -> Query:
    """``SELECT client_id ...``: each matching client once (in no particular order)."""
    query = Query()
    sources = condition.sources
    uses_accounts = bool(sources & {"account", "billing"})
    joins_billing = "billing" in sources
    if shape == "sample":
        percent = query.param(sample_percent, "float4")
        from_ = f"clients c TABLESAMPLE SYSTEM ({percent}) REPEATABLE (20261122)"
        cid = "c.id"
        if uses_accounts:
            join = "LEFT JOIN" if condition.accountless_may_match else "JOIN"
            from_ += f" {join} accounts a ON a.client_id = c.id"
    elif uses_accounts and not condition.accountless_may_match:
        from_, cid = "accounts a", "a.client_id"
        if "client" in sources:
            from_ += " JOIN clients c ON c.id = a.client_id"
    elif uses_accounts:
        from_, cid = "clients c LEFT JOIN accounts a ON a.client_id = c.id", "c.id"
    else:
        from_, cid = "clients c", "c.id"
    if joins_billing:
        from_ += " LEFT JOIN billing_snapshots b ON b.account_id = a.id"
    where = _render(condition.root, query, catalogue, cid, correlated=shape == "ids")
    if shape == "ids":
        where = f"{cid} = ANY({query.param(list(ids or []), 'bigint[]')}) AND {where}"
    distinct = "DISTINCT " if uses_accounts else ""
    query.sql = f"SELECT {distinct}{cid} AS client_id FROM {from_} WHERE {where}"
    return query


def count_query(
    condition: Condition,
    catalogue: Catalogue,
    shape: Shape = "all",
    *,
    sample_percent: float | None = None,
) -> Query:
    """``SELECT count(*)`` of the matching clients (of the sample, for ``sample``)."""
    query = client_ids(condition, catalogue, shape, sample_percent=sample_percent)
    query.sql = f"SELECT count(*) FROM ({query.sql}) matching"
    return query


def _render(node: Node, query: Query, catalogue: Catalogue, cid: str, *, correlated: bool) -> str:
    if isinstance(node, Leaf):
        return _leaf(node, query, catalogue, cid, correlated)
    if isinstance(node, Not):
        # Two-valued: a missing value makes a leaf false, so "not" is its exact complement.
        return (
            f"(({_render(node.child, query, catalogue, cid, correlated=correlated)}) IS NOT TRUE)"
        )
    joiner = " AND " if isinstance(node, AllOf) else " OR "
    assert isinstance(node, (AllOf, AnyOf))
    return (
        "("
        + joiner.join(
            _render(child, query, catalogue, cid, correlated=correlated) for child in node.children
        )
        + ")"
    )


def _leaf(leaf: Leaf, query: Query, catalogue: Catalogue, cid: str, correlated: bool) -> str:
    attribute = leaf.attribute
    if attribute.source == "consent":
        return _consent(leaf, query, catalogue, cid, correlated)
    if attribute.source == "external":
        code = query.param(attribute.code, "text")
        return _row_test(
            leaf,
            query,
            cid,
            correlated,
            "client_attributes",
            f"x.code = {code}",
            f"x.{VALUE_COLUMN[attribute.type]}",
        )
    if attribute.source == "channel_usage":
        column = attribute.source_column or ""
        if not _COLUMN.match(column):
            raise ValueError(
                f"catalogue column {column!r} of {attribute.code} is not an identifier"
            )
        channel = query.param(leaf.channel, "text")
        return _row_test(
            leaf, query, cid, correlated, "channel_usage", f"x.channel = {channel}", f"x.{column}"
        )
    column = attribute.source_column or ""
    if not _COLUMN.match(column):  # the catalogue CHECK says the same; never trust twice-removed
        raise ValueError(f"catalogue column {column!r} of {attribute.code} is not an identifier")
    return _predicate(leaf, query, f"{_ALIAS[attribute.source]}.{column}")


def _predicate(leaf: Leaf, query: Query, col: str) -> str:
    """The leaf's test of the value expression ``col``; NULL (missing) only satisfies is_empty."""
    kind, op, value = leaf.attribute.type, leaf.op, leaf.value
    sql_type = _SQL_TYPE[kind]
    if op == "is_empty":
        if kind == "string":
            return f"({col} IS NULL OR btrim({col}) = '')"
        if kind == "string_list":
            return f"({col} IS NULL OR cardinality({col}) = 0)"
        return f"({col} IS NULL)"
    if op == "is_not_empty":
        if kind == "string":
            return f"({col} IS NOT NULL AND btrim({col}) <> '')"
        if kind == "string_list":
            return f"(cardinality({col}) > 0)"
        return f"({col} IS NOT NULL)"
    if kind == "string_list":
        if op == "contains":
            return f"({col} @> ARRAY[{query.param(value, 'text')}])"
        return f"({col} && {query.param(value, 'text[]')})"  # in: on any of them
    if kind == "string":
        # Case-folded, apostrophe variants ignored: the search normalisation of 0001.
        norm = f"herald_search_norm({col})"
        if op == "contains":
            return f"(strpos({norm}, herald_search_norm({query.param(value, 'text')})) > 0)"
        if op in ("in", "not_in"):
            listed = (
                f"ARRAY(SELECT herald_search_norm(v) "
                f"FROM unnest({query.param(value, 'text[]')}) AS v)"
            )
            return f"({norm} = ANY({listed}))" if op == "in" else f"({norm} <> ALL({listed}))"
        return f"({norm} {_COMPARE[op]} herald_search_norm({query.param(value, 'text')}))"
    if kind == "date":
        col = f"({col})::date"
        if op == "older_than_days":
            return f"({col} < {_TODAY} - {query.param(value, 'int4')})"
        if op == "within_last_days":
            return f"({col} BETWEEN {_TODAY} - {query.param(value, 'int4')} AND {_TODAY})"
    if op == "between":
        low, high = value
        return f"({col} BETWEEN {query.param(low, sql_type)} AND {query.param(high, sql_type)})"
    if op == "in":
        return f"({col} = ANY({query.param(value, sql_type + '[]')}))"
    if op == "not_in":
        return f"({col} <> ALL({query.param(value, sql_type + '[]')}))"
    return f"({col} {_COMPARE[op]} {query.param(value, sql_type)})"


def _consent(leaf: Leaf, query: Query, catalogue: Catalogue, cid: str, correlated: bool) -> str:
    """Opted in (value true) or not, on a channel for a topic; no row: the topic default."""
    allowed_by_default = not catalogue.topic_requires_opt_in[leaf.topic or ""]
    channel, topic = query.param(leaf.channel, "text"), query.param(leaf.topic, "text")
    if correlated:
        choice = (
            f"coalesce((SELECT k.opted_in FROM consents k WHERE k.client_id = {cid} "
            f"AND k.channel = {channel} AND k.topic = {topic}), {allowed_by_default})"
        )
        return f"({choice} = {query.param(bool(leaf.value), 'boolean')})"
    # Only the clients whose explicit choice differs from the default: usually few.
    differing = (
        f"{cid} IN (SELECT k.client_id FROM consents k WHERE k.channel = {channel} "
        f"AND k.topic = {topic} AND k.opted_in = {not allowed_by_default})"
    )
    wants_default = bool(leaf.value) == allowed_by_default
    return f"(NOT ({differing}))" if wants_default else f"({differing})"


def _row_test(
    leaf: Leaf, query: Query, cid: str, correlated: bool, table: str, key: str, column: str
) -> str:
    """A test of the client's row in ``table`` selected by ``key`` (external attribute,
    channel usage); a client without the row has no value (only is_empty holds)."""
    if leaf.op in ("is_empty", "is_not_empty"):
        test = _predicate(Leaf(leaf.attribute, "is_not_empty", None), query, column)
    else:
        test = _predicate(leaf, query, column)
    if correlated:
        found = f"EXISTS (SELECT 1 FROM {table} x WHERE {key} AND x.client_id = {cid} AND {test})"
    else:
        found = f"{cid} IN (SELECT x.client_id FROM {table} x WHERE {key} AND {test})"
    return f"(NOT ({found}))" if leaf.op == "is_empty" else f"({found})"
