"""Condition trees: JSON in, a validated tree out, every error naming its path.

A condition is ``{"all": [...]}``, ``{"any": [...]}``, ``{"not": {...}}`` or a leaf
``{"attribute": "billing.debt", "op": "gt", "value": 500}`` (consent leaves also give
``channel`` and ``topic``, channel-usage leaves ``channel``). Attributes and operators must
be in the catalogue, values must fit the attribute's type; a tree is at most MAX_DEPTH deep and MAX_NODES nodes.

Semantics (what the compiler implements): a client matches when one of its accounts
(with that account's billing snapshot) makes the whole tree true; client-level attributes
(client, consent, channel usage, external) are the same on every account. A value that is missing (no
billing snapshot, no external value) satisfies only ``is_empty``; ``not`` is the exact
complement of its child.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from crm.segments.catalogue import Attribute, Catalogue, check_text, check_value
from herald.errors import Attempt, InvalidInput

SQL_ATTEMPT = "sql"
"""The journal's name (Attempt.kind) for SQL sent where a condition takes a name or a value."""
# What SQL injection needs (a quote, a statement end, a comment, a statement word, a
# tautology); a refused name or value carrying one is journalled, not taken for a typo.
_SQL = re.compile(
    r"['\";`]|--|/\*|\b(select|union|insert|update|delete|drop|alter|truncate|grant|pg_sleep)\b"
    r"|\b(or|and)\b\s+\S+\s*=",
    re.IGNORECASE,
)

MAX_DEPTH = 10
MAX_NODES = 200
MAX_CHILDREN = 50
MAX_LIST = 1000
MAX_DAYS = 36_500

_NO_VALUE = frozenset({"is_empty", "is_not_empty"})
_LIST_VALUE = frozenset({"in", "not_in"})
_DAYS_VALUE = frozenset({"older_than_days", "within_last_days"})
_LEAF_KEYS = frozenset({"attribute", "op", "value", "channel", "topic"})


@dataclass(frozen=True, slots=True)
class Leaf:
    attribute: Attribute
    op: str
    value: Any
    channel: str | None = None
    topic: str | None = None


@dataclass(frozen=True, slots=True)
class AllOf:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    child: Node


Node = Leaf | AllOf | AnyOf | Not


@dataclass(frozen=True, slots=True)
class Condition:
    """A validated tree and what the compiler needs to know about it."""

    root: Node
    sources: frozenset[str]  # client, account, billing, consent, external
    relative_dates: bool  # uses older_than_days / within_last_days
    accountless_may_match: bool  # a client without accounts could satisfy it


class _Counter:
    def __init__(self) -> None:
        self.nodes = 0


def parse(raw: Any, catalogue: Catalogue, path: str = "condition") -> Condition:
    """Validate ``raw`` (decoded JSON) against the catalogue; InvalidInput names the bad path."""
    root = _node(raw, catalogue, path, 1, _Counter())
    leaves = list(_leaves(root))
    return Condition(
        root,
        frozenset(leaf.attribute.source for leaf in leaves),
        any(leaf.op in _DAYS_VALUE for leaf in leaves),
        _without_account(root) is not False,
    )


def _node(raw: Any, catalogue: Catalogue, path: str, depth: int, counter: _Counter) -> Node:
    counter.nodes += 1
    if counter.nodes > MAX_NODES:
        raise InvalidInput(path, f"a condition has at most {MAX_NODES} nodes")
    if depth > MAX_DEPTH:
        raise InvalidInput(path, f"a condition is at most {MAX_DEPTH} levels deep")
    if not isinstance(raw, dict):
        raise InvalidInput(
            path,
            "must be an object: {all: [...]}, {any: [...]}, {not: {...}} or {attribute, op, value}",
        )
    groups = [k for k in ("all", "any", "not") if k in raw]
    if groups:
        if len(raw) != 1:
            extra = sorted(k for k in raw if k != groups[0])
            raise InvalidInput(
                f"{path}.{extra[0]}"[:300] if len(groups) == 1 else path,
                "a group has exactly one key: all, any or not",
            )
        key = groups[0]
        if key == "not":
            return Not(_node(raw["not"], catalogue, f"{path}.not", depth + 1, counter))
        children = raw[key]
        if not isinstance(children, list) or not 1 <= len(children) <= MAX_CHILDREN:
            raise InvalidInput(f"{path}.{key}", f"must be a list of 1 to {MAX_CHILDREN} conditions")
        parsed = tuple(
            _node(child, catalogue, f"{path}.{key}[{i}]", depth + 1, counter)
            for i, child in enumerate(children)
        )
        return AllOf(parsed) if key == "all" else AnyOf(parsed)
    if not raw:
        raise InvalidInput(
            path,
            "an empty condition: give {all: [...]}, {any: [...]}, "
            "{not: {...}} or {attribute, op, value}",
        )
    return _leaf(raw, catalogue, path)


def _leaf(raw: dict[str, Any], catalogue: Catalogue, path: str) -> Leaf:
    unknown = sorted(str(k) for k in raw if k not in _LEAF_KEYS)
    if unknown:
        raise InvalidInput(
            f"{path}.{unknown[0]}"[:300],
            "unknown key; a leaf has attribute, op, value (and channel, topic for consent)",
        )
    code = raw.get("attribute")
    if not isinstance(code, str):
        raise InvalidInput(f"{path}.attribute", "the code of a catalogue attribute is required")
    attribute = catalogue.attributes.get(code)
    if attribute is None:
        raise _journalled(
            InvalidInput(
                f"{path}.attribute",
                f"unknown attribute {code[:100]!r}; see GET /api/v1/segments/attributes",
            ),
            code,
        )
    op = raw.get("op")
    if not isinstance(op, str) or op not in attribute.operators:
        shown = repr(op[:50]) if isinstance(op, str) else "missing"
        raise _journalled(
            InvalidInput(
                f"{path}.op",
                f"operator {shown} is not allowed for {code}; "
                f"one of {', '.join(attribute.operators)}",
            ),
            op,
        )
    qualified: dict[str, str] = {}
    for qualifier in attribute.qualifiers:
        given = raw.get(qualifier.name)
        if not isinstance(given, str) or given not in qualifier.values:
            raise _journalled(
                InvalidInput(
                    f"{path}.{qualifier.name}",
                    f"{code} needs {qualifier.name}: one of " + ", ".join(qualifier.values),
                ),
                given,
            )
        qualified[qualifier.name] = given
    for key in ("channel", "topic"):
        if key in raw and key not in qualified:
            raise InvalidInput(f"{path}.{key}", f"{code} takes no {key}")
    channel, topic = qualified.get("channel"), qualified.get("topic")
    try:
        value = _value(attribute, op, raw, f"{path}.value")
    except InvalidInput as exc:
        raise _journalled(exc, raw.get("value")) from None
    return Leaf(attribute, op, value, channel, topic)


def _sql_in(given: Any) -> str | None:
    """The first string of ``given`` (a string or a list) that carries SQL syntax."""
    for item in given if isinstance(given, list) else [given]:
        if isinstance(item, str) and _SQL.search(item):
            return item
    return None


def _journalled(error: InvalidInput, given: Any) -> InvalidInput:
    """``error`` refusing ``given``, marked as an attack when ``given`` carries SQL."""
    sample = _sql_in(given)
    if sample is None:
        return error
    return InvalidInput(
        error.field,
        error.detail,
        attempts=(Attempt(SQL_ATTEMPT, error.field, error.detail, sample),),
    )


def _value(attribute: Attribute, op: str, raw: dict[str, Any], path: str) -> Any:
    value = raw.get("value")
    if op in _NO_VALUE:
        if value is not None:
            raise InvalidInput(path, f"{op} takes no value")
        return None
    if value is None:
        raise InvalidInput(path, f"{op} needs a value")
    if op in _DAYS_VALUE:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DAYS:
            raise InvalidInput(path, f"a whole number of days from 0 to {MAX_DAYS}")
        return value
    if op == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise InvalidInput(path, "between takes [low, high]")
        low = check_value(attribute, value[0], f"{path}[0]")
        high = check_value(attribute, value[1], f"{path}[1]")
        if low > high:
            raise InvalidInput(path, "low must not be greater than high")
        return (low, high)
    if attribute.type == "string_list":
        if op == "contains":
            return check_text(value, path)
        op = "in"  # any of the listed strings
    if op in _LIST_VALUE or op == "in":
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_LIST:
            raise InvalidInput(path, f"{op} takes a list of 1 to {MAX_LIST} values")
        if attribute.type == "string_list":
            return [check_text(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return [check_value(attribute, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if op == "contains":
        return check_text(value, path)
    return check_value(attribute, value, path)


def _leaves(node: Node) -> Any:
    if isinstance(node, Leaf):
        yield node
    elif isinstance(node, Not):
        yield from _leaves(node.child)
    else:
        for child in node.children:
            yield from _leaves(child)


def _without_account(node: Node) -> bool | None:
    """The tree's value for a client without accounts, when it does not depend on the client.

    Account and billing values are all missing then: only ``is_empty`` holds. None: it
    depends on client-level attributes.
    """
    if isinstance(node, Leaf):
        if node.attribute.source in ("account", "billing"):
            return node.op == "is_empty"
        return None
    if isinstance(node, Not):
        inner = _without_account(node.child)
        return None if inner is None else not inner
    values = [_without_account(child) for child in node.children]
    if isinstance(node, AllOf):
        if False in values:
            return False
        return True if all(v is True for v in values) else None
    if True in values:
        return True
    return False if all(v is False for v in values) else None
