"""The case rule engine (issue 15): when / if / then, in the transaction of the change.

Every case event a rule may react to is queued by a trigger of migration 0060 in the
transaction that wrote it. ``process(conn, case_id)``, called by the code paths that
change a case before they commit, takes its case's queued events, maps them to triggers
(case created, a field changed, the client or an agent wrote, an SLA warning or breach,
a task done), and runs the active rules of those triggers in their order: a rule whose
condition tree holds applies its actions one by one (each in a savepoint: a refused
action is journalled, not fatal; adding a note or a tag, which cannot be refused, runs
without one) and may stop the processing of later rules. The
events the actions write are taken in the next round, up to ``MAX_DEPTH`` rounds; a rule
runs at most ``RUN_CAP`` times a day on one case. Those two bounds are the loop guard.
Every run is journalled: a ``case_rule_runs`` row and a case event of kind
``automation`` on the case's timeline. To keep intake fast with many rules, a round
writes its run rows in one statement, its automation events in one statement per stretch
of runs between two actions that write, and reads the loop guard's counts once.

Idle and scheduled-time rules are run by the scheduler (``run_time_rules``); events
left in the queue by paths that do not call ``process`` (the SLA evaluator) by
``run_queue``. Webhooks and client messages leave through ``case_rule_outbox``: the
dispatcher delivers them after the commit, so a failing webhook never blocks a case.

Regular expressions of conditions are limited in length, refused when they nest
quantifiers or use back-references (the shapes of catastrophic backtracking), and
matched with the ``regex`` module's time limit over a bounded text.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import msgspec
import regex

from crm.cases import correction, routing, store, tasks, transitions
from crm.cases.correction import ClassificationPatch
from crm.cases.routing import Reassignment
from crm.cases.rule_types import Action as RuleAction
from crm.cases.rule_types import (
    ActionOutcome,
    AddNote,
    AddTag,
    AllOf,
    CallWebhook,
    CaseRule,
    CaseRuleSpec,
    Cond,
    ConditionTrace,
    CreateTask,
    DryRunResult,
    Node,
    Not,
    NotifySupervisors,
    Route,
    SendMessage,
    SetAssignee,
    SetCategory,
    SetGroup,
    SetPriority,
    SetStatus,
)
from crm.cases.store import NewEvent
from crm.cases.tasks import CaseTaskSpec
from crm.cases.types import CHANNELS, Case
from herald import clock
from herald.audit import Actor
from herald.errors import Conflict, HeraldError, InvalidInput, NotFound

log = logging.getLogger("herald.cases.rules")
T = TypeVar("T")

AUTOMATION = Actor(login="automation")
MAX_DEPTH = 5
RUN_CAP = 10
REGEX_MAX_LENGTH = 200
REGEX_TEXT_LIMIT = 10_000
REGEX_TIMEOUT = 0.05
TIME_BATCH = 200

# -- regular expressions ---------------------------------------------------------------------

# A group with a quantifier (or an alternation) inside, itself quantified: (a+)+, (.*)*,
# (a|aa)+, (\w+\s?){2,} - the shapes that backtrack exponentially.
_NESTED = regex.compile(
    r"\((?:[^()\\]|\\.)*(?:[*+?|]|\{\d*,?\d*\})(?:[^()\\]|\\.)*\)\s*(?:[*+]|\{\d*,\d*\})"
)
_BACKREF = regex.compile(r"\\[1-9]|\(\?P=|\\g<|\\k<")
_BIG_REPEAT = regex.compile(r"\{(\d{3,})(?:,\d*)?\}|\{\d*,(\d{3,})\}")


def check_regex(pattern: str, where: str) -> None:
    """Refuse a pattern that is too long, invalid, or shaped for catastrophic backtracking."""
    if not pattern or len(pattern) > REGEX_MAX_LENGTH:
        raise InvalidInput(where, f"a regular expression of 1-{REGEX_MAX_LENGTH} characters")
    if _BACKREF.search(pattern):
        raise InvalidInput(where, "back-references are not allowed in a regular expression")
    if _NESTED.search(pattern):
        raise InvalidInput(
            where,
            "nested repetition (e.g. (a+)+ or (a|b)*) can take exponential time; "
            "rewrite the expression without a repeated group that repeats inside",
        )
    if _BIG_REPEAT.search(pattern):
        raise InvalidInput(where, "a repetition count above 99 is not allowed")
    try:
        regex.compile(pattern, regex.IGNORECASE)
    except regex.error as exc:
        raise InvalidInput(where, f"not a valid regular expression: {exc}") from None


def regex_search(pattern: str, text: str) -> bool | None:
    """Whether the pattern is found; None when the time limit ran out."""
    try:
        return (
            regex.search(pattern, text[:REGEX_TEXT_LIMIT], regex.IGNORECASE, timeout=REGEX_TIMEOUT)
            is not None
        )
    except TimeoutError:
        return None


# -- checks needing the database -----------------------------------------------------------

_FIELD_OPS: dict[str, frozenset[str]] = {
    "status": frozenset({"eq", "ne", "in", "not_in"}),
    "priority": frozenset({"eq", "ne", "in", "not_in"}),
    "category": frozenset({"eq", "ne", "in", "not_in", "under", "is_set", "is_not_set"}),
    "case_type": frozenset({"eq", "ne", "in", "not_in", "is_set", "is_not_set"}),
    "channel": frozenset({"eq", "ne", "in", "not_in"}),
    "group": frozenset({"eq", "ne", "in", "not_in", "is_set", "is_not_set"}),
    "assignee": frozenset({"eq", "ne", "is_set", "is_not_set"}),
    "is_repeat": frozenset({"eq"}),
    "identified": frozenset({"eq"}),
    "tags": frozenset({"has", "is_set", "is_not_set"}),
    "text": frozenset({"contains", "regex"}),
    "subject": frozenset({"contains", "regex", "is_set", "is_not_set"}),
    "client.segments": frozenset({"has"}),
    "client.consumer_types": frozenset({"has"}),
    "client.registers": frozenset({"has", "is_set", "is_not_set"}),
    "client.debt": frozenset({"gt", "ge", "lt", "le", "eq"}),
}
_ENUMS: dict[str, tuple[str, ...]] = {
    "status": ("new", "in_progress", "on_hold", "resolved", "closed"),
    "priority": ("low", "normal", "high", "urgent"),
    "case_type": ("technical", "financial", "informational"),
    "channel": CHANNELS,
    "client.consumer_types": (
        "household",
        "household_heating",
        "condominium",
        "religious",
        "budget",
    ),
}
MAX_NODES = 60


async def _check_value(conn: asyncpg.Connection, cond: Cond, where: str) -> None:
    fld, op, value = cond.field, cond.op, cond.value
    if op not in _FIELD_OPS[fld]:
        allowed = ", ".join(sorted(_FIELD_OPS[fld]))
        raise InvalidInput(f"{where}.op", f"{fld!r} takes: {allowed}")
    if op in ("is_set", "is_not_set"):
        if value is not None:
            raise InvalidInput(f"{where}.value", f"{op} takes no value")
        return
    if op in ("gt", "ge", "lt", "le") or fld == "client.debt":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInput(f"{where}.value", "give a number")
        return
    if fld in ("is_repeat", "identified"):
        if not isinstance(value, bool):
            raise InvalidInput(f"{where}.value", "give true or false")
        return
    values: list[str]
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value or len(value) > 100:
            raise InvalidInput(f"{where}.value", "give a list of 1-100 values")
        values = value
    else:
        if not isinstance(value, str) or not value:
            raise InvalidInput(f"{where}.value", "give a text value")
        if len(value) > 500:
            raise InvalidInput(f"{where}.value", "at most 500 characters")
        values = [value]
    if op == "regex":
        check_regex(values[0], f"{where}.value")
        return
    if fld in _ENUMS:
        bad = [v for v in values if v not in _ENUMS[fld]]
        if bad:
            raise InvalidInput(f"{where}.value", f"unknown {fld}: {', '.join(bad)}")
    elif fld == "category":
        known = {
            r["code"]
            for r in await conn.fetch(
                "SELECT code FROM case_categories WHERE code = ANY($1::text[])", values
            )
        }
        bad = [v for v in values if v not in known]
        if bad:
            raise InvalidInput(f"{where}.value", f"no case category {', '.join(bad)}")
    elif fld == "group":
        known = {
            r["code"]
            for r in await conn.fetch(
                "SELECT code FROM case_groups WHERE code = ANY($1::text[])", values
            )
        }
        bad = [v for v in values if v not in known]
        if bad:
            raise InvalidInput(f"{where}.value", f"no case group {', '.join(bad)}")
    elif fld in ("assignee", "client.segments"):
        table, what = ("users", "user") if fld == "assignee" else ("segments", "segment")
        if not values[0].isdigit() or not await conn.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM {table} WHERE id = $1)", int(values[0][:18])
        ):
            raise InvalidInput(f"{where}.value", f"no {what} {values[0]}")


async def _check_node(conn: asyncpg.Connection, node: Node, where: str, seen: list[int]) -> None:
    seen.append(1)
    if len(seen) > MAX_NODES:
        raise InvalidInput(where, f"a condition has at most {MAX_NODES} parts")
    if where.count(".") > 8:
        raise InvalidInput(where, "a condition is nested at most 8 levels deep")
    if isinstance(node, Cond):
        await _check_value(conn, node, where)
    elif isinstance(node, Not):
        await _check_node(conn, node.item, f"{where}.item", seen)
    else:
        for i, item in enumerate(node.items):
            await _check_node(conn, item, f"{where}.items[{i}]", seen)


async def _template_version(conn: asyncpg.Connection, action: SendMessage, where: str) -> int:
    version = action.template_version or await conn.fetchval(
        "SELECT current_version FROM message_templates WHERE id = $1", action.template_id
    )
    if version is None:
        raise InvalidInput(f"{where}.template_id", f"template {action.template_id} does not exist")
    variants = await conn.fetchval(
        "SELECT variants FROM message_template_versions WHERE template_id = $1 AND version = $2",
        action.template_id,
        version,
    )
    if variants is None:
        raise InvalidInput(
            f"{where}.template_version", f"template {action.template_id} has no version {version}"
        )
    if len(set(action.channel_chain)) != len(action.channel_chain):
        raise InvalidInput(f"{where}.channel_chain", "a channel may appear only once")
    missing = [c for c in action.channel_chain if not (variants or {}).get(c)]
    if missing:
        raise InvalidInput(
            f"{where}.channel_chain", f"the template has no text for: {', '.join(missing)}"
        )
    value: int = version
    return value


async def _check_action(conn: asyncpg.Connection, action: RuleAction, where: str) -> RuleAction:
    if isinstance(action, SetCategory):
        if not await conn.fetchval(
            "SELECT is_active FROM case_categories WHERE code = $1", action.category
        ):
            raise InvalidInput(f"{where}.category", f"no active case category {action.category}")
    elif isinstance(action, (SetGroup, CreateTask)):
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM case_groups WHERE code = $1)", action.group_code
        ):
            raise InvalidInput(f"{where}.group_code", f"no case group {action.group_code!r}")
    elif isinstance(action, SetAssignee):
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)", action.user_id
        ):
            raise InvalidInput(f"{where}.user_id", f"no user {action.user_id}")
    elif isinstance(action, SendMessage):
        version = await _template_version(conn, action, where)
        # The version is pinned, as notification rules pin theirs.
        return msgspec.structs.replace(action, template_version=version)
    return action


async def check(conn: asyncpg.Connection, spec: CaseRuleSpec) -> CaseRuleSpec:
    """The spec with its template versions pinned, or InvalidInput naming the field."""
    trigger = spec.trigger
    if trigger.type == "idle" and trigger.hours is None:
        raise InvalidInput("trigger.hours", "an idle rule needs the hours")
    if trigger.type != "idle" and trigger.hours is not None:
        raise InvalidInput("trigger.hours", "only an idle rule takes hours")
    if trigger.type == "scheduled" and trigger.at is None:
        raise InvalidInput("trigger.at", "a scheduled rule needs the time of day (HH:MM)")
    if trigger.type != "scheduled" and trigger.at is not None:
        raise InvalidInput("trigger.at", "only a scheduled rule takes a time of day")
    if trigger.type != "field_changed" and trigger.fields:
        raise InvalidInput("trigger.fields", "only a field_changed rule watches fields")
    if spec.condition is not None:
        await _check_node(conn, spec.condition, "condition", [])
    actions = [await _check_action(conn, a, f"actions[{i}]") for i, a in enumerate(spec.actions)]
    return msgspec.structs.replace(spec, actions=actions)


# -- loading rules ---------------------------------------------------------------------------

_COLUMNS = (
    "id, name, position, is_active, stop_processing, trigger, condition, actions, version, "
    "created_by, created_at, updated_by, updated_at"
)
# Decoded rules by (id, version, time of the version): a saved version never changes, so
# this needs no invalidation (the time tells apart databases that reuse ids, as tests do).
_decoded: dict[tuple[int, int, dt.datetime], CaseRule] = {}


def _key(row: asyncpg.Record) -> tuple[int, int, dt.datetime]:
    return (row["id"], row["version"], row["updated_at"])


def rule_from_row(row: asyncpg.Record) -> CaseRule:
    key = _key(row)
    found = _decoded.get(key)
    if found is None or found.is_active != row["is_active"] or found.position != row["position"]:
        found = msgspec.convert(dict(row), CaseRule)
        if len(_decoded) > 5000:
            _decoded.clear()
        _decoded[key] = found
    return found


async def active_rules(conn: asyncpg.Connection, trigger_types: Sequence[str]) -> list[CaseRule]:
    rows = await conn.fetch(
        "SELECT id, version, updated_at, is_active, position FROM case_rules "
        "WHERE is_active AND trigger_type = ANY($1::text[]) ORDER BY position, id",
        list(trigger_types),
    )
    missing = [r["id"] for r in rows if _key(r) not in _decoded]
    if missing:
        for full in await conn.fetch(
            f"SELECT {_COLUMNS} FROM case_rules WHERE id = ANY($1::bigint[])", missing
        ):
            rule_from_row(full)
    return [rule_from_row_light(r) for r in rows]


def rule_from_row_light(row: asyncpg.Record) -> CaseRule:
    rule = _decoded[_key(row)]
    if rule.is_active != row["is_active"] or rule.position != row["position"]:
        rule = msgspec.structs.replace(rule, is_active=row["is_active"], position=row["position"])
    return rule


# -- the facts a condition reads -----------------------------------------------------------


@dataclass
class Fired:
    trigger: str
    event_id: int | None = None
    fields: tuple[str, ...] = ()
    text: str | None = None
    channel: str | None = None


@dataclass
class _Facts:
    case: Case
    tags: list[str]
    text: str | None = None
    client: dict[str, Any] | None = None
    segments: dict[str, bool] = field(default_factory=dict)


async def _load_facts(conn: asyncpg.Connection, case_id: int, text: str | None) -> _Facts:
    case = await store.get_case(conn, case_id)
    tags = await conn.fetchval("SELECT tags FROM cases WHERE id = $1", case_id)
    return _Facts(case, list(tags or []), text)


async def _client(conn: asyncpg.Connection, facts: _Facts) -> dict[str, Any]:
    if facts.client is None:
        if facts.case.client_id is None:
            facts.client = {"consumer_types": [], "registers": [], "debt": 0.0}
        else:
            row = await conn.fetchrow(
                """
                SELECT coalesce(array_agg(DISTINCT a.consumer_type), '{}') AS consumer_types,
                       coalesce((SELECT array_agg(DISTINCT r) FROM accounts a2,
                                        unnest(a2.registers) AS r
                                 WHERE a2.client_id = $1), '{}') AS registers,
                       coalesce(sum(b.debt), 0)::float8 AS debt
                FROM accounts a LEFT JOIN billing_snapshots b ON b.account_id = a.id
                WHERE a.client_id = $1
                """,
                facts.case.client_id,
            )
            facts.client = {
                "consumer_types": list(row["consumer_types"]),
                "registers": list(row["registers"]),
                "debt": float(row["debt"]),
            }
    return facts.client


async def _value(conn: asyncpg.Connection, facts: _Facts, name: str) -> Any:
    case = facts.case
    match name:
        case "status" | "priority" | "case_type" | "channel":
            return getattr(case, name)
        case "category":
            return case.category_code
        case "group":
            return case.group_code
        case "assignee":
            return None if case.assignee_id is None else str(case.assignee_id)
        case "is_repeat":
            return case.is_repeat
        case "identified":
            return case.client_id is not None
        case "tags":
            return facts.tags
        case "text":
            return facts.text if facts.text is not None else f"{case.subject or ''}\n{case.text}"
        case "subject":
            return case.subject
        case "client.consumer_types" | "client.registers" | "client.debt":
            return (await _client(conn, facts))[name.removeprefix("client.")]
    raise ValueError(name)  # pragma: no cover - FIELDS is exhaustive


def _number(value: Any) -> float:
    return float(value)


async def _holds(conn: asyncpg.Connection, facts: _Facts, cond: Cond) -> tuple[bool, str]:
    op, want = cond.op, cond.value
    if cond.field == "client.segments":
        key = str(want)
        if key not in facts.segments:
            facts.segments[key] = facts.case.client_id is not None and bool(
                await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM segment_members WHERE segment_id = $1 "
                    "AND client_id = $2)",
                    int(key),
                    facts.case.client_id,
                )
            )
        return facts.segments[key], f"segment {key}: {facts.segments[key]}"
    actual = await _value(conn, facts, cond.field)
    shown = actual if not isinstance(actual, str) or len(actual) <= 60 else actual[:60] + "…"
    detail = f"{cond.field} = {shown!r}"
    if op == "is_set":
        return actual not in (None, "", []), detail
    if op == "is_not_set":
        return actual in (None, "", []), detail
    if isinstance(actual, list):
        items = [str(a) for a in actual]
        if op == "has":
            return str(want) in items, detail
        return False, detail
    if op in ("gt", "ge", "lt", "le") or (op == "eq" and isinstance(actual, float)):
        a, b = _number(actual or 0), _number(want)
        return {"gt": a > b, "ge": a >= b, "lt": a < b, "le": a <= b, "eq": a == b}[op], detail
    if isinstance(actual, bool):
        return actual == want, detail
    text = "" if actual is None else str(actual)
    if op == "eq":
        return actual is not None and text == want, detail
    if op == "ne":
        return text != want, detail
    if op == "in":
        return isinstance(want, list) and text in want, detail
    if op == "not_in":
        return isinstance(want, list) and text not in want, detail
    if op == "under":
        return actual is not None and (text == want or text.startswith(f"{want}.")), detail
    if op == "contains":
        return str(want).casefold() in text.casefold(), detail
    if op == "regex":
        found = regex_search(str(want), text)
        if found is None:
            return False, f"{cond.field}: the regular expression ran out of time"
        return found, detail
    return False, detail


async def evaluate(
    conn: asyncpg.Connection,
    facts: _Facts,
    node: Node | None,
    trace: list[ConditionTrace] | None = None,
    path: str = "condition",
) -> bool:
    """Whether the tree holds; ``trace`` (if given) gets every node's result, parents first
    (then every branch is evaluated, for the dry run to show)."""
    if node is None:
        return True
    slot = -1
    if trace is not None:
        slot = len(trace)
        trace.append(ConditionTrace(path, False))
    if isinstance(node, Cond):
        result, detail = await _holds(conn, facts, node)
    elif isinstance(node, Not):
        result, detail = not await evaluate(conn, facts, node.item, trace, f"{path}.item"), "not"
    else:
        want_all = isinstance(node, AllOf)
        result, detail = want_all, "and" if want_all else "or"
        for i, item in enumerate(node.items):
            if await evaluate(conn, facts, item, trace, f"{path}.items[{i}]") != want_all:
                result = not want_all
                if trace is None:
                    break
    if trace is not None:
        trace[slot] = ConditionTrace(path, result, detail)
    return result


# -- actions -------------------------------------------------------------------------------


async def _now(conn: asyncpg.Connection) -> dt.datetime:
    value: dt.datetime = await conn.fetchval("SELECT herald_now()")
    return value


def snapshot(case: Case, tags: Sequence[str]) -> dict[str, Any]:
    return {
        "status": case.status,
        "priority": case.priority,
        "category": case.category_code,
        "case_type": case.case_type,
        "group": case.group_code,
        "assignee_id": case.assignee_id,
        "tags": list(tags),
    }


async def _apply(
    conn: asyncpg.Connection, facts: _Facts, rule: CaseRule, fired: Fired, action: RuleAction
) -> str:
    """Do one action in the caller's transaction; return what was done."""
    case = facts.case
    data = {"case_rule_id": rule.id, "trigger": fired.trigger}
    if isinstance(action, SetStatus):
        if case.status == action.status:
            return f"status already {action.status}"
        after = await transitions.apply(conn, AUTOMATION, case, action.status, data=data)
        return f"status {case.status} → {after.status}"
    if isinstance(action, SetPriority):
        if _writes_nothing(facts, action):  # what ``correct`` finds, without its reads
            return f"priority {case.priority} → {case.priority}"
        after = await correction.correct(
            conn, AUTOMATION, case.id, ClassificationPatch(priority=action.priority)
        )
        return f"priority {case.priority} → {after.priority}"
    if isinstance(action, SetCategory):
        category_id = await conn.fetchval(
            "SELECT id FROM case_categories WHERE code = $1 AND is_active", action.category
        )
        if category_id is None:
            raise InvalidInput("category", f"no active case category {action.category}")
        await correction.correct(
            conn, AUTOMATION, case.id, ClassificationPatch(category_id=category_id)
        )
        return f"category {case.category_code} → {action.category}"
    if isinstance(action, SetGroup):
        after = await routing.reassign(
            conn, AUTOMATION, case.id, Reassignment(group_code=action.group_code)
        )
        return f"group {case.group_code} → {after.group_code}"
    if isinstance(action, SetAssignee):
        after = await routing.reassign(
            conn, AUTOMATION, case.id, Reassignment(user_id=action.user_id)
        )
        return f"assignee {case.assignee_id} → {after.assignee_id}"
    if isinstance(action, Route):
        await conn.execute(
            "UPDATE cases SET group_manual = false, updated_at = herald_now() WHERE id = $1",
            case.id,
        )
        after = await routing.place(conn, AUTOMATION, case, reason="automation")
        return f"routed to group {after.group_code} (assigned by the group's mode)"
    if isinstance(action, AddTag):
        if action.tag in facts.tags:
            return f"tag {action.tag} already set"
        await conn.execute(
            "UPDATE cases SET tags = array_append(tags, $2), updated_at = herald_now() "
            "WHERE id = $1",
            case.id,
            action.tag,
        )
        await store.append_events(
            conn, AUTOMATION, case.id, [NewEvent(kind="tag", body=action.tag, data=data)]
        )
        return f"tag {action.tag} added"
    if isinstance(action, AddNote):
        await store.append_events(
            conn, AUTOMATION, case.id, [NewEvent(kind="note", body=action.text, data=data)]
        )
        return "internal note added"
    if isinstance(action, NotifySupervisors):
        await conn.execute(
            "INSERT INTO case_rule_alerts (case_id, rule_id, group_code, text) "
            "VALUES ($1, $2, $3, $4)",
            case.id,
            rule.id,
            case.group_code,
            action.text,
        )
        await conn.execute("SELECT pg_notify('herald_case_changed', $1)", str(case.id))
        return "supervisors notified"
    if isinstance(action, CreateTask):
        due = await _now(conn) + dt.timedelta(hours=action.due_hours)
        task = await tasks.create_task(
            conn,
            AUTOMATION,
            case.id,
            CaseTaskSpec(group_code=action.group_code, title=action.title, due_at=due),
        )
        return f"task {task.id} for {task.group_code}, due {task.due_at.isoformat()}"
    if isinstance(action, SendMessage):
        if case.client_id is None:
            raise Conflict("the case has no client to write to")
        payload = {
            "template_id": action.template_id,
            "template_version": action.template_version,
            "channel_chain": list(action.channel_chain),
        }
        outbox = await _outbox(conn, case.id, rule.id, "message", payload)
        return f"message by template {action.template_id} queued ({outbox})"
    if isinstance(action, CallWebhook):
        body = {
            "event": "case_rule",
            "rule": {"id": rule.id, "name": rule.name, "version": rule.version},
            "trigger": fired.trigger,
            "case": {"id": case.id, "number": case.number, **snapshot(case, facts.tags)},
        }
        outbox = await _outbox(conn, case.id, rule.id, "webhook", {"url": action.url, "body": body})
        return f"webhook to {action.url} queued ({outbox})"
    raise ValueError(action)  # pragma: no cover - the union is exhaustive


async def _outbox(
    conn: asyncpg.Connection, case_id: int, rule_id: int, kind: str, payload: dict[str, Any]
) -> str:
    outbox_id = await conn.fetchval(
        "INSERT INTO case_rule_outbox (case_id, rule_id, kind, payload) VALUES ($1, $2, $3, $4) "
        "RETURNING id",
        case_id,
        rule_id,
        kind,
        payload,
    )
    return f"outbox {outbox_id}"


# The actions that change the case's row: the facts are read again after them.
_CHANGES_CASE = (SetStatus, SetPriority, SetCategory, SetGroup, SetAssignee, Route)
# The actions that cannot be refused (they only add rows about the locked case): no savepoint.
_NO_SAVEPOINT = (AddNote, AddTag)


def _writes_nothing(facts: _Facts, action: RuleAction) -> bool:
    """The actions that find their work done and write nothing."""
    if isinstance(action, AddTag):
        return action.tag in facts.tags
    if isinstance(action, SetPriority):  # a closed case refuses it (correction.correct)
        return facts.case.priority == action.priority and facts.case.status != "closed"
    return isinstance(action, SetStatus) and facts.case.status == action.status


async def _run_actions(
    conn: asyncpg.Connection, facts: _Facts, rule: CaseRule, fired: Fired, guard: _Guard
) -> list[ActionOutcome]:
    outcomes: list[ActionOutcome] = []
    for action in rule.actions:
        kind = msgspec.to_builtins(action)["type"]
        idle = _writes_nothing(facts, action)
        if not idle:
            await guard.flush_events(conn)
        try:
            if idle or isinstance(action, _NO_SAVEPOINT):
                detail = await _apply(conn, facts, rule, fired, action)
            else:
                async with conn.transaction():  # a savepoint: a refused action undoes only itself
                    detail = await _apply(conn, facts, rule, fired, action)
        except (HeraldError, asyncpg.IntegrityConstraintViolationError) as exc:
            outcomes.append(ActionOutcome(kind, False, str(exc)[:500]))
        else:
            outcomes.append(ActionOutcome(kind, True, detail))
        if isinstance(action, _CHANGES_CASE) and not idle:
            facts.case = await store.get_case(conn, facts.case.id)
        elif isinstance(action, AddTag) and outcomes[-1].ok and action.tag not in facts.tags:
            facts.tags.append(action.tag)
    return outcomes


class _Guard:
    """The loop guard's counts and the run rows of one ``process`` call: the counts of the
    candidate rules are read once (one query) and then kept here, the run rows are written
    together at the end of each round (one statement)."""

    def __init__(self, case_id: int) -> None:
        self.case_id = case_id
        self.counts: dict[int, int] = {}
        self.runs: list[tuple[Any, ...]] = []
        self.events: list[NewEvent] = []

    async def capped(
        self, conn: asyncpg.Connection, rule: CaseRule, rules: Sequence[CaseRule]
    ) -> bool:
        if rule.id not in self.counts:
            wanted = sorted({r.id for r in rules if r.id not in self.counts} | {rule.id})
            found = {
                r["rule_id"]: r["n"]
                for r in await conn.fetch(
                    "SELECT rule_id, count(*) AS n FROM case_rule_runs WHERE case_id = $1 "
                    "AND rule_id = ANY($2::bigint[]) AND outcome = 'done' "
                    "AND at > herald_now() - interval '1 day' GROUP BY rule_id",
                    self.case_id,
                    wanted,
                )
            }
            for rule_id in wanted:
                self.counts[rule_id] = found.get(rule_id, 0)
        return self.counts[rule.id] >= RUN_CAP

    async def flush_events(self, conn: asyncpg.Connection) -> None:
        """Write the waiting ``automation`` events (before anything that writes events of
        its own, so that the case's events keep the order of the runs)."""
        if self.events:
            await store.append_events(conn, AUTOMATION, self.case_id, self.events)
            self.events = []

    async def flush(self, conn: asyncpg.Connection) -> None:
        await self.flush_events(conn)
        if self.runs:
            await conn.executemany(
                "INSERT INTO case_rule_runs (case_id, rule_id, version, trigger, event_id, "
                "depth, outcome, actions) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                self.runs,
            )
            self.runs = []


async def _journal(
    conn: asyncpg.Connection,
    guard: _Guard,
    rule: CaseRule,
    fired: Fired,
    depth: int,
    outcome: str,
    actions: list[ActionOutcome],
) -> None:
    """Journal a run: its ``case_rule_runs`` row waits in ``guard`` for the round's end,
    the case's ``automation`` event until the next write of an event (``flush_events``)."""
    done = [msgspec.to_builtins(a) for a in actions]
    guard.runs.append(
        (guard.case_id, rule.id, rule.version, fired.trigger, fired.event_id, depth, outcome, done)
    )
    if outcome == "done":
        guard.counts[rule.id] = guard.counts.get(rule.id, 0) + 1
    if outcome == "no_match":
        return
    guard.events.append(
        NewEvent(
            kind="automation",
            body=rule.name,
            data={
                "rule_id": rule.id,
                "version": rule.version,
                "trigger": fired.trigger,
                "outcome": outcome,
                "depth": depth,
                "actions": done,
            },
        )
    )


def _matches_trigger(rule: CaseRule, fired: Fired) -> bool:
    if rule.trigger.type != fired.trigger:
        return False
    return not rule.trigger.fields or any(f in fired.fields for f in rule.trigger.fields)


async def run_rule(
    conn: asyncpg.Connection,
    facts: _Facts,
    rule: CaseRule,
    fired: Fired,
    depth: int,
    guard: _Guard | None = None,
    rules: Sequence[CaseRule] = (),
) -> bool | None:
    """Run one rule on the (locked) case: True if it matched and acted, False if its
    condition did not hold, None if the loop guard stopped it. Without ``guard`` the run
    row is written before returning; with it, at the caller's ``guard.flush``."""
    if guard is None:
        guard = _Guard(facts.case.id)
        result = await _run_rule(conn, facts, rule, fired, depth, guard, rules)
        await guard.flush(conn)
        return result
    return await _run_rule(conn, facts, rule, fired, depth, guard, rules)


async def _run_rule(
    conn: asyncpg.Connection,
    facts: _Facts,
    rule: CaseRule,
    fired: Fired,
    depth: int,
    guard: _Guard,
    rules: Sequence[CaseRule],
) -> bool | None:
    if not await evaluate(conn, facts, rule.condition):
        if fired.trigger in ("idle", "scheduled"):
            await _journal(conn, guard, rule, fired, depth, "no_match", [])
        return False
    if await guard.capped(conn, rule, rules):
        await _journal(conn, guard, rule, fired, depth, "capped", [])
        return None
    outcomes = await _run_actions(conn, facts, rule, fired, guard)
    await _journal(conn, guard, rule, fired, depth, "done", outcomes)
    return True


# -- events -> triggers ------------------------------------------------------------------------

_CLASSIFIED = {"category_id": "category", "case_type": "case_type", "priority": "priority"}


def fired_of(rows: Sequence[asyncpg.Record]) -> list[Fired]:
    created = any(r["kind"] == "created" for r in rows)
    out: list[Fired] = []
    for r in rows:
        kind = r["kind"]
        data = r["data"] if isinstance(r["data"], dict) else {}
        if kind == "created":
            out.append(Fired("case_created", r["id"], text=None, channel=r["channel"]))
        elif kind == "message":
            if r["direction"] == "in" and not created:
                out.append(Fired("client_replied", r["id"], text=r["body"], channel=r["channel"]))
            elif r["direction"] == "out":
                out.append(Fired("agent_replied", r["id"], text=r["body"], channel=r["channel"]))
        elif kind == "status":
            out.append(Fired("field_changed", r["id"], ("status",)))
        elif kind == "assignment":
            changed = tuple(
                name
                for name, new, old in (
                    ("group", "group_code", "from_group_code"),
                    ("assignee", "assignee_id", "from_assignee_id"),
                )
                if data.get(new) != data.get(old)
            )
            if changed:
                out.append(Fired("field_changed", r["id"], changed))
        elif kind == "classification":
            before, chosen = data.get("before"), data.get("chosen") or {}
            if isinstance(before, dict):
                changed = tuple(v for k, v in _CLASSIFIED.items() if before.get(k) != chosen.get(k))
                if changed:
                    out.append(Fired("field_changed", r["id"], changed))
        elif kind == "sla":
            level = data.get("level")
            if level in ("warning", "breached"):
                trigger = "sla_warning" if level == "warning" else "sla_breach"
                out.append(Fired(trigger, r["id"], (str(data.get("target")),)))
        elif kind == "task" and data.get("action") == "done":
            out.append(Fired("task_done", r["id"], text=r["body"]))
    return out


_TAKE = """
WITH q AS (DELETE FROM case_rule_queue WHERE case_id = $1 RETURNING event_id)
SELECT e.id, e.kind, e.channel, e.direction, e.body, e.data
FROM case_events e JOIN q ON q.event_id = e.id ORDER BY e.id
"""
_ACTIVE_ANY = (
    "SELECT EXISTS (SELECT 1 FROM case_rules WHERE is_active AND trigger_type <> ALL($1::text[]))"
)


async def process(conn: asyncpg.Connection, case_id: int) -> int:
    """Run the rules the case's queued events trigger, in the caller's transaction (the
    case is locked here); return how many rules acted."""
    acted = 0
    guard: _Guard | None = None
    for depth in range(MAX_DEPTH + 1):
        rows = await conn.fetch(_TAKE, case_id)
        if not rows:
            return acted
        fired = fired_of(rows)
        if not fired:
            continue
        rules = await active_rules(conn, sorted({f.trigger for f in fired}))
        if not rules:
            continue
        if depth == MAX_DEPTH:
            await store.append_events(
                conn,
                AUTOMATION,
                case_id,
                [
                    NewEvent(
                        kind="automation",
                        body="loop guard",
                        data={"outcome": "depth_limit", "depth": depth, "dropped": len(fired)},
                    )
                ],
            )
            await conn.execute("DELETE FROM case_rule_queue WHERE case_id = $1", case_id)
            log.warning("case %s: rules stopped at depth %s (loop guard)", case_id, depth)
            return acted
        await conn.execute("SELECT 1 FROM cases WHERE id = $1 FOR UPDATE", case_id)
        facts = await _load_facts(conn, case_id, None)
        guard = _Guard(case_id) if guard is None else guard
        ran: set[int] = set()
        for f in fired:
            facts.text = f.text
            for rule in rules:
                if rule.id in ran or not _matches_trigger(rule, f):
                    continue
                result = await run_rule(conn, facts, rule, f, depth, guard, rules)
                if result is None:
                    ran.add(rule.id)
                    continue
                if result:
                    ran.add(rule.id)
                    acted += 1
                    if rule.stop_processing:
                        break
        await guard.flush(conn)
    return acted


async def run_queue(pool: asyncpg.Pool, *, limit: int = 200) -> int:
    """Run the rules of events no code path processed (SLA warnings and breaches, other
    writers); one transaction per case. Returns the cases handled."""
    async with pool.acquire() as conn:
        if not await conn.fetchval(_ACTIVE_ANY, sorted(TIME_TRIGGER_TYPES)):
            await conn.execute("DELETE FROM case_rule_queue")
            return 0
        case_ids = [
            r["case_id"]
            for r in await conn.fetch(
                "SELECT DISTINCT case_id FROM (SELECT case_id FROM case_rule_queue "
                "ORDER BY event_id LIMIT $1) q",
                limit,
            )
        ]
    for case_id in case_ids:
        async with pool.acquire() as conn, conn.transaction():
            locked = await conn.fetchval(
                "SELECT id FROM cases WHERE id = $1 FOR UPDATE SKIP LOCKED", case_id
            )
            if locked is not None:
                await process(conn, case_id)
    return len(case_ids)


TIME_TRIGGER_TYPES = frozenset({"idle", "scheduled"})

# -- idle and scheduled rules ------------------------------------------------------------------

# greatest() skips NULLs: a case never answered counts from its status change or message.
_ACTIVITY = "greatest(c.status_changed_at, c.last_inbound_at, c.last_outbound_at)"
_IDLE = f"""
SELECT c.id FROM cases c
WHERE c.status <> 'closed'
  AND {_ACTIVITY} < herald_now() - make_interval(hours => $2)
  AND ($3::bigint IS NULL OR business_between($3, {_ACTIVITY}, herald_now()) >= $2 * 3600.0)
  AND NOT EXISTS (SELECT 1 FROM case_rule_runs r WHERE r.case_id = c.id AND r.rule_id = $1
                  AND r.at >= {_ACTIVITY})
ORDER BY c.id LIMIT $4
"""
_SCHEDULED = """
SELECT c.id FROM cases c
WHERE c.status <> 'closed'
  AND NOT EXISTS (SELECT 1 FROM case_rule_runs r WHERE r.case_id = c.id AND r.rule_id = $1
                  AND r.at >= $2)
ORDER BY c.id LIMIT $3
"""


def scheduled_instant(at: str, now: dt.datetime) -> dt.datetime:
    """Today's business-local ``HH:MM`` as an instant."""
    tz = clock.business_tz()
    hours, minutes = (int(p) for p in at.split(":"))
    local = now.astimezone(tz)
    return dt.datetime.combine(local.date(), dt.time(hours, minutes), tz)


async def run_time_rules(pool: asyncpg.Pool, *, batch: int = TIME_BATCH) -> int:
    """Run idle and scheduled rules on the cases that are due; return how many acted."""
    async with pool.acquire() as conn:
        rules = await active_rules(conn, sorted(TIME_TRIGGER_TYPES))
        calendar = await conn.fetchval("SELECT min(id) FROM business_calendars")
        now = await _now(conn)
    acted = 0
    for rule in rules:
        if rule.trigger.type == "idle":
            query: tuple[Any, ...] = (_IDLE, rule.id, rule.trigger.hours, calendar, batch)
        else:
            start = scheduled_instant(rule.trigger.at or "00:00", now)
            if now < start:
                continue
            query = (_SCHEDULED, rule.id, start, batch)
        async with pool.acquire() as conn:
            due = [r["id"] for r in await conn.fetch(*query)]
        for case_id in due:
            async with pool.acquire() as conn, conn.transaction():
                if (
                    await conn.fetchval(
                        "SELECT id FROM cases WHERE id = $1 FOR UPDATE SKIP LOCKED", case_id
                    )
                    is None
                ):
                    continue
                facts = await _load_facts(conn, case_id, None)
                if await run_rule(conn, facts, rule, Fired(rule.trigger.type), 0):
                    acted += 1
                await process(conn, case_id)  # what the actions set off
    return acted


# -- dry run ---------------------------------------------------------------------------------


class _DryRunDone(Exception):
    pass


async def dry_run(
    conn: asyncpg.Connection, case_id: int, rule: CaseRule, *, text: str | None = None
) -> DryRunResult:
    """What the rule would do to the case now: the condition's trace, each action's result
    and the case before and after. Everything runs in a transaction that is rolled back."""
    result: DryRunResult | None = None
    try:
        async with conn.transaction():
            await conn.execute("SELECT 1 FROM cases WHERE id = $1 FOR UPDATE", case_id)
            facts = await _load_facts(conn, case_id, text)
            before = snapshot(facts.case, facts.tags)
            trace: list[ConditionTrace] = []
            matched = await evaluate(conn, facts, rule.condition, trace)
            outcomes: list[ActionOutcome] = []
            if matched:
                outcomes = await _run_actions(
                    conn, facts, rule, Fired(rule.trigger.type), _Guard(case_id)
                )
            result = DryRunResult(
                case_id=facts.case.id,
                case_number=facts.case.number,
                matched=matched,
                trace=trace,
                actions=outcomes,
                before=before,
                after=snapshot(facts.case, facts.tags),
            )
            raise _DryRunDone
    except _DryRunDone:
        pass
    if result is None:  # pragma: no cover - the block above always sets it
        raise NotFound(f"no case {case_id}")
    return result


# -- the code paths that change a case ------------------------------------------------------


async def changing_case(conn: asyncpg.Connection, change: Coroutine[Any, Any, Case]) -> Case:
    """Await a change of a case and run the rules it triggers, in one transaction; the
    case as the rules left it."""
    async with conn.transaction():
        case = await change
        if await process(conn, case.id):
            case = await store.get_case(conn, case.id)
    return case


async def changing(
    conn: asyncpg.Connection, change: Coroutine[Any, Any, T], case_of: Callable[[T], int]
) -> T:
    """Await a change touching a case (``case_of`` names it) and run the rules it triggers."""
    async with conn.transaction():
        result = await change
        await process(conn, case_of(result))
    return result
