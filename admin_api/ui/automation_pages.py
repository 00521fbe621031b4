"""The no-code workflow designer (issue 15): case rules built as when / if / then.

The list (order, on/off, move up/down), the versions of a rule with a diff and a
rollback are server-rendered here. The form that builds a rule (the condition tree
included) is the Alpine component ``ruleEditor`` of ``static/automation.js``, loaded
only on this page; it saves through ``/api/v1/case-rules`` and dry-runs a rule against
a case through ``/api/v1/case-rules/dry-run``, showing the API's errors next to the
fields they name. Permission ``cases.automation`` on every route."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from aiohttp import web

from admin_api.routing import EndpointTable, path_int
from admin_api.security import actor
from admin_api.typedefs import DB
from admin_api.ui import forms, i18n, labels
from admin_api.ui.menu import N_
from admin_api.ui.rendering import language, render
from crm.cases import rule_engine, rule_store
from crm.cases.rule_types import ACTION_TYPES, TRIGGER_TYPES, CaseRulePatch

endpoints = EndpointTable("ui")
PERMISSION = "cases.automation"

TRIGGER_NAMES = {
    "case_created": N_("A case is created"),
    "field_changed": N_("A field of the case changes"),
    "client_replied": N_("The client writes"),
    "agent_replied": N_("An agent replies"),
    "sla_warning": N_("SLA warning"),
    "sla_breach": N_("SLA breach"),
    "idle": N_("No activity for N business hours"),
    "task_done": N_("A hand-off task is done"),
    "scheduled": N_("Every day at a set time"),
}
CHANGED_FIELDS = {
    "status": N_("Status"),
    "priority": N_("Priority"),
    "category": N_("Category"),
    "case_type": N_("Type"),
    "group": N_("Group"),
    "assignee": N_("Assignee"),
}
FIELD_NAMES = {
    **CHANGED_FIELDS,
    "channel": N_("Channel"),
    "is_repeat": N_("Repeat case"),
    "identified": N_("Client identified"),
    "tags": N_("Tags"),
    "text": N_("Text of the message"),
    "subject": N_("Subject"),
    "client.segments": N_("Client: segment"),
    "client.consumer_types": N_("Client: consumer type"),
    "client.registers": N_("Client: register"),
    "client.debt": N_("Client: debt, UAH"),
}
OP_NAMES = {
    "eq": N_("is"),
    "ne": N_("is not"),
    "in": N_("is one of"),
    "not_in": N_("is none of"),
    "gt": N_("greater than"),
    "ge": N_("at least"),
    "lt": N_("less than"),
    "le": N_("at most"),
    "contains": N_("contains"),
    "regex": N_("matches the regular expression"),
    "has": N_("has"),
    "under": N_("is in the branch"),
    "is_set": N_("is set"),
    "is_not_set": N_("is not set"),
}
ACTION_NAMES = {
    "set_status": N_("Set the status"),
    "set_priority": N_("Set the priority"),
    "set_category": N_("Set the category"),
    "set_group": N_("Move to the group"),
    "set_assignee": N_("Assign to"),
    "route": N_("Route by the group's mode"),
    "add_tag": N_("Add a tag"),
    "add_note": N_("Add an internal note"),
    "send_message": N_("Send the client a message"),
    "notify_supervisors": N_("Notify supervisors"),
    "create_task": N_("Create a hand-off task"),
    "webhook": N_("Call a webhook"),
}
GROUP_NAMES = {"and": N_("All of (AND)"), "or": N_("Any of (OR)"), "not": N_("Not (NOT)")}
CONSUMER_TYPES = {
    "household": N_("Household"),
    "household_heating": N_("Household with heating"),
    "condominium": N_("Condominium"),
    "religious": N_("Religious organisation"),
    "budget": N_("Budget organisation"),
}
STATUSES = ("new", "in_progress", "on_hold", "resolved", "closed")
PRIORITIES = ("low", "normal", "high", "urgent")
CASE_TYPES = ("technical", "financial", "informational")
CHANNELS = ("call", "viber", "telegram", "site", "cabinet", "email", "app", "walk_in")


class MoveForm(msgspec.Struct):
    direction: Literal["up", "down"]


class DiffQuery(msgspec.Struct, forbid_unknown_fields=True):
    against: int | None = None


def _choices(pairs: dict[str, str], gettext: Any) -> list[dict[str, str]]:
    return [{"value": k, "label": gettext(v)} for k, v in pairs.items()]


async def _options(request: web.Request) -> dict[str, Any]:
    """Everything the editor offers, translated into the person's language."""
    lang = await language(request)
    gettext = i18n.translations(lang).gettext

    def named(codes: tuple[str, ...]) -> list[dict[str, str]]:
        return [{"value": c, "label": gettext(labels.LABELS.get(c, c))} for c in codes]

    async with request.app[DB].acquire() as conn:
        found = await rule_store.designer_choices(conn)
    name = "name_uk" if lang == "uk" else "name_en"
    categories = [
        {"value": r["code"], "label": f"{r[name]} ({r['code']})"} for r in found["categories"]
    ]
    groups = [{"value": r["code"], "label": r[name]} for r in found["groups"]]
    users = [
        {"value": str(r["id"]), "label": f"{r['full_name']} ({r['login']})"} for r in found["users"]
    ]
    segments = [{"value": str(r["id"]), "label": r["name"]} for r in found["segments"]]
    enum: dict[str, list[dict[str, str]]] = {
        "status": named(STATUSES),
        "priority": named(PRIORITIES),
        "case_type": named(CASE_TYPES),
        "channel": named(CHANNELS),
        "category": categories,
        "group": groups,
        "assignee": users,
        "client.segments": segments,
        "client.consumer_types": _choices(CONSUMER_TYPES, gettext),
    }
    fields = []
    for code, label in FIELD_NAMES.items():
        kind = (
            "enum"
            if code in enum
            else "number"
            if code == "client.debt"
            else "bool"
            if code in ("is_repeat", "identified")
            else "text"
        )
        fields.append(
            {
                "value": code,
                "label": gettext(label),
                "kind": kind,
                "ops": [op for op in OP_NAMES if op in rule_engine._FIELD_OPS[code]],
                "choices": enum.get(code, []),
            }
        )
    return {
        "triggers": [{"value": t, "label": gettext(TRIGGER_NAMES[t])} for t in TRIGGER_TYPES],
        "changed": _choices(CHANGED_FIELDS, gettext),
        "fields": fields,
        "ops": {k: gettext(v) for k, v in OP_NAMES.items()},
        "groupKinds": _choices(GROUP_NAMES, gettext),
        "actions": [{"value": a, "label": gettext(ACTION_NAMES[a])} for a in ACTION_TYPES],
        "statuses": enum["status"],
        "priorities": enum["priority"],
        "categories": categories,
        "groups": groups,
        "users": users,
        "templates": [
            {"value": str(r["id"]), "label": r["name"], "channels": sorted(r["channels"])}
            for r in found["templates"]
        ],
        "yes": gettext("yes"),
        "no": gettext("no"),
    }


async def _list_context(request: web.Request) -> dict[str, Any]:
    async with request.app[DB].acquire() as conn:
        rules = await rule_store.list_rules(conn)
        alerts = await rule_store.alerts(conn, limit=10)
    return {"rules": rules, "trigger_names": TRIGGER_NAMES, "alerts": alerts}


@endpoints.get(
    "/ui/automation", permission=PERMISSION, response=str, media_type="text/html", errors=(404,)
)
async def automation_page(request: web.Request) -> web.Response:
    """The rules in their order, and the form building one (``?rule=<id>`` or a new one)."""
    raw = request.query.get("rule", "")
    rule = None
    if raw.isdigit() and len(raw) < 19:
        async with request.app[DB].acquire() as conn:
            rule = await rule_store.get_rule(conn, int(raw))
    ctx = await _list_context(request)
    ctx.update(
        {
            "rule": rule,
            "rule_json": msgspec.json.encode(rule).decode() if rule is not None else "null",
            "options_json": msgspec.json.encode(await _options(request)).decode(),
        }
    )
    return await render(request, "automation.html", ctx)


@endpoints.get("/ui/automation/rules", permission=PERMISSION, response=str, media_type="text/html")
async def rules_list(request: web.Request) -> web.Response:
    """The list of rules."""
    return await render(request, "_automation_rules.html", await _list_context(request))


@endpoints.post(
    r"/ui/automation/{rule_id:\d+}/move",
    permission=PERMISSION,
    response=str,
    media_type="text/html",
    errors=(400, 404),
)
async def move(request: web.Request) -> web.Response:
    """One place up or down in the order."""
    body = await forms.form(request, MoveForm)
    async with request.app[DB].acquire() as conn:
        await rule_store.move_rule(
            conn, actor(request), path_int(request, "rule_id"), body.direction
        )
    return await render(request, "_automation_rules.html", await _list_context(request))


@endpoints.post(
    r"/ui/automation/{rule_id:\d+}/toggle",
    permission=PERMISSION,
    response=str,
    media_type="text/html",
    errors=(404,),
)
async def toggle(request: web.Request) -> web.Response:
    """Switch a rule on or off."""
    rule_id = path_int(request, "rule_id")
    async with request.app[DB].acquire() as conn:
        rule = await rule_store.get_rule(conn, rule_id)
        await rule_store.patch_rule(
            conn, actor(request), rule_id, CaseRulePatch(is_active=not rule.is_active)
        )
    return await render(request, "_automation_rules.html", await _list_context(request))


async def _versions_context(request: web.Request, rule_id: int) -> dict[str, Any]:
    async with request.app[DB].acquire() as conn:
        rule = await rule_store.get_rule(conn, rule_id)
        found = await rule_store.versions(conn, rule_id)
    return {"rule": rule, "versions": found}


@endpoints.get(
    r"/ui/automation/{rule_id:\d+}/versions",
    permission=PERMISSION,
    response=str,
    media_type="text/html",
    errors=(404,),
)
async def versions(request: web.Request) -> web.Response:
    """The versions of a rule: who, when, what, with a diff and a rollback."""
    ctx = await _versions_context(request, path_int(request, "rule_id"))
    return await render(request, "_automation_versions.html", ctx)


@endpoints.get(
    r"/ui/automation/{rule_id:\d+}/versions/{version:\d+}/diff",
    permission=PERMISSION,
    response=str,
    media_type="text/html",
    errors=(400, 404),
)
async def diff(request: web.Request) -> web.Response:
    """What changed from the previous version to this one."""
    rule_id, version = path_int(request, "rule_id"), path_int(request, "version")
    async with request.app[DB].acquire() as conn:
        changes = await rule_store.diff(conn, rule_id, version - 1, version) if version > 1 else []
    return await render(request, "_automation_diff.html", {"changes": changes, "version": version})


@endpoints.post(
    r"/ui/automation/{rule_id:\d+}/versions/{version:\d+}/rollback",
    permission=PERMISSION,
    response=str,
    media_type="text/html",
    errors=(400, 404, 409),
)
async def rollback(request: web.Request) -> web.Response:
    """Restore a version: it becomes the newest one; the page reloads with the rule."""
    rule_id = path_int(request, "rule_id")
    async with request.app[DB].acquire() as conn:
        await rule_store.rollback(conn, actor(request), rule_id, path_int(request, "version"))
    return web.Response(text="", headers={"HX-Redirect": f"/ui/automation?rule={rule_id}"})
