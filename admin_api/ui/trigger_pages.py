"""Triggers (IC-06): the trigger rules (event type, conditions on the event and on the
client, template version, channel chain, delay, contact policy), create / edit / enable;
the event producers and their API keys (create, revoke; a key is shown once); the recent
events and the messages each caused. The same domain functions as ``/api/v1/trigger-rules``,
``/api/v1/producers`` and ``/api/v1/producer-events`` (``dispatcher.realtime``).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from aiohttp import web

from admin_api import inputs
from admin_api.routing import EndpointTable, path_int, validation_field
from admin_api.security import actor, principal
from admin_api.typedefs import DB
from admin_api.ui.menu import N_
from admin_api.ui.rendering import render
from dispatcher.realtime import producers, triggers
from dispatcher.realtime.producers import ProducerSpec
from dispatcher.realtime.triggers import TriggerRule, TriggerRuleSpec
from dispatcher.templating import store as template_store
from herald.errors import InvalidInput

endpoints = EndpointTable("ui")

CHANNELS = ("viber", "sms", "email")
OPERATORS = (
    "eq",
    "ne",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "not_in",
    "contains",
    "exists",
    "not_exists",
)
CLIENT_ATTRIBUTES = (
    "region",
    "consumer_type",
    "account_status",
    "has_debt",
    "debt",
    "destroyed_housing",
    "registers",
)
# How the form and the list name the operators and the client's attributes.
OPERATOR_NAMES = {
    "eq": "=",
    "ne": "≠",
    "gt": ">",
    "gte": "≥",
    "lt": "<",
    "lte": "≤",
    "in": N_("one of"),
    "not_in": N_("none of"),
    "contains": N_("contains"),
    "exists": N_("is present"),
    "not_exists": N_("is absent"),
}
ATTRIBUTE_NAMES = {
    "region": N_("Region"),
    "consumer_type": N_("Consumer type"),
    "account_status": N_("Account status"),
    "has_debt": N_("Has a debt"),
    "debt": N_("Debt"),
    "destroyed_housing": N_("Destroyed housing"),
    "registers": N_("Registers"),
}
EMPTY_ROWS = 2  # blank condition rows the form offers besides the rule's own
RULE_FIELDS = (
    "name",
    "event_type",
    "template",
    "delay_seconds",
    "max_messages",
    "period_seconds",
    "min_interval_seconds",
    "receipt_timeout_seconds",
    "policy_scope",
)


def parse_value(op: str, text: str) -> Any:
    """A condition's value as typed: a list (comma-separated) for in/not_in, none for
    exists/not_exists, else a number, true/false, or the text itself."""
    if op in ("exists", "not_exists"):
        return None
    if op in ("in", "not_in"):
        return [parse_value("eq", part.strip()) for part in text.split(",") if part.strip()]
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        number = json.loads(text)
    except ValueError:
        return text
    return number if isinstance(number, int | float) and not isinstance(number, bool) else text


def show_value(value: Any) -> str:
    """A condition's value as the form shows it (the inverse of ``parse_value``)."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(show_value(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _rows(posted: Any, prefix: str, key: str) -> list[dict[str, Any]]:
    """The condition rows of the form (parallel lists), blank rows left out."""
    keys = posted.getall(f"{prefix}_{key}", [])
    ops = posted.getall(f"{prefix}_op", [])
    values = posted.getall(f"{prefix}_value", [])
    found = []
    for name, op, value in zip(keys, ops, values, strict=False):
        if not str(name).strip():
            continue
        found.append(
            {key: str(name).strip(), "op": op, "value": parse_value(op, str(value).strip())}
        )
    return found


def _spec(posted: Any) -> tuple[TriggerRuleSpec | None, dict[str, Any], InvalidInput | None]:
    """The posted form as a rule spec, the values to show again, and the error if any."""
    raw = {k: str(posted.get(k, "")).strip() for k in RULE_FIELDS}
    chain = [c for c in posted.getall("channel_chain", []) if c in CHANNELS]
    values: dict[str, Any] = {
        **raw,
        "chain": [(c, True) for c in chain] + [(c, False) for c in CHANNELS if c not in chain],
        "conditions": _rows(posted, "cond", "path"),
        "client_conditions": _rows(posted, "client", "attribute"),
        "is_active": posted.get("is_active") == "true",
    }
    template_id, _, version = raw["template"].partition(":")
    body: dict[str, Any] = {
        "name": raw["name"],
        "event_type": raw["event_type"],
        "template_id": int(template_id) if template_id.isdigit() else 0,
        "template_version": int(version) if version.isdigit() else None,
        "channel_chain": chain,
        "conditions": values["conditions"],
        "client_conditions": values["client_conditions"],
        "delay_seconds": raw["delay_seconds"] or 0,
        "max_messages": raw["max_messages"] or None,
        "period_seconds": raw["period_seconds"] or None,
        "min_interval_seconds": raw["min_interval_seconds"] or None,
        "receipt_timeout_seconds": raw["receipt_timeout_seconds"] or 900,
        "is_active": values["is_active"],
        "policy_scope": raw["policy_scope"] or "rule",
    }
    if not template_id.isdigit():
        return None, values, InvalidInput("template_id", "choose a template")
    if not chain:
        return None, values, InvalidInput("channel_chain", "choose at least one channel")
    try:
        return msgspec.convert(body, TriggerRuleSpec, strict=False), values, None
    except msgspec.ValidationError as exc:
        field, message = validation_field(exc)
        return None, values, InvalidInput(field, message)


def _values_of(rule: TriggerRule | None) -> dict[str, Any]:
    if rule is None:
        return {
            "name": "",
            "event_type": "",
            "template": "",
            "chain": [(c, True) for c in ("viber", "sms")] + [("email", False)],
            "conditions": [],
            "client_conditions": [],
            "delay_seconds": "0",
            "max_messages": "",
            "period_seconds": "",
            "min_interval_seconds": "",
            "receipt_timeout_seconds": "900",
            "policy_scope": "rule",
            "is_active": True,
        }
    chain = list(rule.channel_chain)
    return {
        "name": rule.name,
        "event_type": rule.event_type,
        "template": f"{rule.template_id}:{rule.template_version}",
        "chain": [(c, True) for c in chain] + [(c, False) for c in CHANNELS if c not in chain],
        "conditions": [msgspec.to_builtins(c) for c in rule.conditions],
        "client_conditions": [msgspec.to_builtins(c) for c in rule.client_conditions],
        "delay_seconds": str(rule.delay_seconds),
        "max_messages": str(rule.max_messages or ""),
        "period_seconds": str(rule.period_seconds or ""),
        "min_interval_seconds": str(rule.min_interval_seconds or ""),
        "receipt_timeout_seconds": str(rule.receipt_timeout_seconds),
        "policy_scope": rule.policy_scope,
        "is_active": rule.is_active,
    }


async def _rule_form(
    request: web.Request,
    rule: TriggerRule | None,
    values: dict[str, Any],
    error: InvalidInput | None = None,
) -> web.Response:
    async with request.app[DB].acquire() as conn:
        templates = await template_store.list_templates(conn, limit=500, after_id=0)
    field = None
    if error is not None:
        field = error.field.split(".")[0].split("[")[0]
    return await render(
        request,
        "trigger_form.html",
        {
            "rule": rule,
            "values": values,
            "templates": templates,
            "operators": OPERATORS,
            "client_attributes": CLIENT_ATTRIBUTES,
            "op_names": OPERATOR_NAMES,
            "attribute_names": ATTRIBUTE_NAMES,
            "empty_rows": EMPTY_ROWS,
            "show_value": show_value,
            "error": error,
            "error_field": field,
        },
        status=400 if error else 200,
    )


# -- the page ----------------------------------------------------------------------------


async def _events_context(request: web.Request) -> dict[str, Any]:
    async with request.app[DB].acquire() as conn:
        return {"events": await producers.recent_events(conn, limit=30)}


@endpoints.get("/ui/triggers", permission="triggers.read", response=str, media_type="text/html")
async def triggers_page(request: web.Request) -> web.Response:
    """The trigger rules, the producers (for who may manage them) and the recent events."""
    async with request.app[DB].acquire() as conn:
        rules = await triggers.list_rules(conn)
        templates = {
            t.id: t for t in await template_store.list_templates(conn, limit=500, after_id=0)
        }
        found = (
            await producers.list_producers(conn)
            if "events.manage" in principal(request).permissions
            else []
        )
    ctx = {
        "rules": rules,
        "templates": templates,
        "producers": found,
        "created": None,
        "op_names": OPERATOR_NAMES,
        "attribute_names": ATTRIBUTE_NAMES,
        "show_value": show_value,
    }
    ctx.update(await _events_context(request))
    return await render(request, "triggers.html", ctx)


@endpoints.get(
    "/ui/triggers/events", permission="triggers.read", response=str, media_type="text/html"
)
async def events_part(request: web.Request) -> web.Response:
    """The recent events and what each caused (reloaded by the page)."""
    return await render(request, "_trigger_events.html", await _events_context(request))


# -- rules -------------------------------------------------------------------------------


@endpoints.get(
    "/ui/triggers/new", permission="triggers.manage", response=str, media_type="text/html"
)
async def new_rule_page(request: web.Request) -> web.Response:
    """The form of a new trigger rule."""
    return await _rule_form(request, None, _values_of(None))


@endpoints.post(
    "/ui/triggers/new",
    permission="triggers.manage",
    response=str,
    media_type="text/html",
    errors=(400,),
)
async def create_rule(request: web.Request) -> web.Response:
    """Create the rule; a bad field shows next to it."""
    spec, values, error = _spec(await inputs.read_form(request))
    if spec is not None:
        try:
            async with request.app[DB].acquire() as conn:
                await triggers.create_rule(conn, actor(request), spec)
        except InvalidInput as refused:
            error = refused
    if error is not None:
        return await _rule_form(request, None, values, error)
    return web.Response(status=303, headers={"Location": "/ui/triggers"})


@endpoints.get(
    r"/ui/triggers/{rule_id:\d+}/edit",
    permission="triggers.manage",
    response=str,
    media_type="text/html",
    errors=(404,),
)
async def edit_rule_page(request: web.Request) -> web.Response:
    """A rule's form (a save makes a new rule version)."""
    async with request.app[DB].acquire() as conn:
        rule = await triggers.get_rule(conn, path_int(request, "rule_id"))
    return await _rule_form(request, rule, _values_of(rule))


@endpoints.post(
    r"/ui/triggers/{rule_id:\d+}/edit",
    permission="triggers.manage",
    response=str,
    media_type="text/html",
    errors=(400, 404),
)
async def update_rule(request: web.Request) -> web.Response:
    """Save the rule's settings."""
    rule_id = path_int(request, "rule_id")
    spec, values, error = _spec(await inputs.read_form(request))
    async with request.app[DB].acquire() as conn:
        rule = await triggers.get_rule(conn, rule_id)
        if spec is not None:
            try:
                await triggers.update_rule(conn, actor(request), rule_id, spec)
            except InvalidInput as refused:
                error = refused
    if error is not None:
        return await _rule_form(request, rule, values, error)
    return web.Response(status=303, headers={"Location": "/ui/triggers"})


def spec_of(rule: TriggerRule, **changes: Any) -> TriggerRuleSpec:
    """The settings of a stored rule, with ``changes``."""
    fields = {f.name for f in msgspec.structs.fields(TriggerRuleSpec)}
    data = {k: v for k, v in msgspec.to_builtins(rule).items() if k in fields}
    return msgspec.convert({**data, **changes}, TriggerRuleSpec)


@endpoints.post(
    r"/ui/triggers/{rule_id:\d+}/active",
    permission="triggers.manage",
    response=str,
    media_type="text/html",
    errors=(400, 404),
)
async def toggle_rule(request: web.Request) -> web.Response:
    """Enable or disable the rule (``active``: true or false); its row comes back."""
    active = (await inputs.read_form(request)).get("active") == "true"
    rule_id = path_int(request, "rule_id")
    async with request.app[DB].acquire() as conn:
        rule = await triggers.get_rule(conn, rule_id)
        rule = await triggers.update_rule(
            conn, actor(request), rule_id, spec_of(rule, is_active=active)
        )
        templates = {
            t.id: t for t in await template_store.list_templates(conn, limit=500, after_id=0)
        }
    return await render(
        request,
        "_trigger_rule_row.html",
        {
            "r": rule,
            "templates": templates,
            "op_names": OPERATOR_NAMES,
            "attribute_names": ATTRIBUTE_NAMES,
            "show_value": show_value,
        },
    )


# -- producers ---------------------------------------------------------------------------


async def _producers_part(
    request: web.Request,
    created: producers.ProducerCreated | None = None,
    error: InvalidInput | None = None,
) -> web.Response:
    async with request.app[DB].acquire() as conn:
        found = await producers.list_producers(conn)
    return await render(
        request,
        "_trigger_producers.html",
        {"producers": found, "created": created, "error": error},
        status=400 if error else 200,
    )


@endpoints.post(
    "/ui/triggers/producers",
    permission="events.manage",
    response=str,
    media_type="text/html",
    errors=(400, 409),
)
async def create_producer(request: web.Request) -> web.Response:
    """Register a producer; its API key is shown in this answer only."""
    posted = await inputs.read_form(request)
    name = str(posted.get("name", "")).strip()
    types = [t.strip() for t in str(posted.get("event_types", "")).split(",") if t.strip()]
    try:
        spec = msgspec.convert({"name": name, "event_types": types}, ProducerSpec)
    except msgspec.ValidationError as exc:
        field, message = validation_field(exc)
        return await _producers_part(request, error=InvalidInput(field, message))
    async with request.app[DB].acquire() as conn:
        created = await producers.create(conn, actor(request), spec)
    return await _producers_part(request, created)


@endpoints.post(
    r"/ui/triggers/producers/{producer_id:\d+}/revoke",
    permission="events.manage",
    response=str,
    media_type="text/html",
    errors=(404,),
)
async def revoke_producer(request: web.Request) -> web.Response:
    """Refuse the producer's key from now on."""
    async with request.app[DB].acquire() as conn:
        await producers.deactivate(conn, actor(request), path_int(request, "producer_id"))
    return await _producers_part(request)
