"""The case rule engine's API (issue 15): rules (when / if / then), their order, a dry
run against an existing case, versions with a diff and a rollback, the run journal of a
case and the supervisors' notices. Permission ``cases.automation`` (administrators and
supervisors by default); a case's journal needs ``cases.read``."""

from __future__ import annotations

from typing import Literal

import msgspec
from aiohttp import web

from admin_api.routing import EndpointTable, path_int
from admin_api.security import actor
from admin_api.typedefs import DB
from crm.cases import rule_engine, rule_store
from crm.cases.rule_types import (
    CaseRule,
    CaseRuleAlert,
    CaseRuleDiff,
    CaseRulePatch,
    CaseRuleRun,
    CaseRuleSpec,
    CaseRuleVersion,
    DryRunRequest,
    DryRunResult,
)
from herald.bounds import Version
from herald.errors import InvalidInput

endpoints = EndpointTable("case-rules")
PERMISSION = "cases.automation"


class MoveRequest(msgspec.Struct, forbid_unknown_fields=True):
    direction: Literal["up", "down"]


class DiffQuery(msgspec.Struct, forbid_unknown_fields=True):
    """Compare version ``against`` (default: the one before) with the version in the path."""

    against: Version | None = None


@endpoints.get("/api/v1/case-rules", permission=PERMISSION, response=list[CaseRule])
async def list_rules(request: web.Request) -> list[CaseRule]:
    """The case rules in the order they run."""
    async with request.app[DB].acquire() as conn:
        return await rule_store.list_rules(conn)


@endpoints.post(
    "/api/v1/case-rules",
    permission=PERMISSION,
    body=CaseRuleSpec,
    response=CaseRule,
    status=201,
    errors=(400,),
)
async def create_rule(request: web.Request, body: CaseRuleSpec) -> CaseRule:
    """Add a rule (off unless ``is_active``); version 1 is kept."""
    async with request.app[DB].acquire() as conn:
        return await rule_store.create_rule(conn, actor(request), body)


@endpoints.get(
    "/api/v1/case-rules/{rule_id}", permission=PERMISSION, response=CaseRule, errors=(404,)
)
async def get_rule(request: web.Request) -> CaseRule:
    """One rule."""
    async with request.app[DB].acquire() as conn:
        return await rule_store.get_rule(conn, path_int(request, "rule_id"))


@endpoints.put(
    "/api/v1/case-rules/{rule_id}",
    permission=PERMISSION,
    body=CaseRuleSpec,
    response=CaseRule,
    errors=(400, 404),
)
async def update_rule(request: web.Request, body: CaseRuleSpec) -> CaseRule:
    """Replace a rule; the new state is a new version."""
    async with request.app[DB].acquire() as conn:
        return await rule_store.update_rule(
            conn, actor(request), path_int(request, "rule_id"), body
        )


@endpoints.patch(
    "/api/v1/case-rules/{rule_id}",
    permission=PERMISSION,
    body=CaseRulePatch,
    response=CaseRule,
    errors=(400, 404),
)
async def patch_rule(request: web.Request, body: CaseRulePatch) -> CaseRule:
    """Switch a rule on or off, or set its position."""
    async with request.app[DB].acquire() as conn:
        return await rule_store.patch_rule(conn, actor(request), path_int(request, "rule_id"), body)


@endpoints.post(
    "/api/v1/case-rules/{rule_id}/move",
    permission=PERMISSION,
    body=MoveRequest,
    response=list[CaseRule],
    errors=(400, 404),
)
async def move_rule(request: web.Request, body: MoveRequest) -> list[CaseRule]:
    """Move a rule one place up or down in the order; returns the new order."""
    async with request.app[DB].acquire() as conn:
        return await rule_store.move_rule(
            conn, actor(request), path_int(request, "rule_id"), body.direction
        )


@endpoints.delete("/api/v1/case-rules/{rule_id}", permission=PERMISSION, status=204, errors=(404,))
async def delete_rule(request: web.Request) -> None:
    """Delete a rule (its versions stay, for the journal)."""
    async with request.app[DB].acquire() as conn:
        await rule_store.delete_rule(conn, actor(request), path_int(request, "rule_id"))


@endpoints.post(
    "/api/v1/case-rules/dry-run",
    permission=PERMISSION,
    body=DryRunRequest,
    response=DryRunResult,
    errors=(400, 404),
)
async def dry_run(request: web.Request, body: DryRunRequest) -> DryRunResult:
    """What a rule (saved: ``rule_id``; being edited: ``rule``) would do to an existing
    case now: the condition's trace, each action's outcome, the case before and after.
    Nothing is written."""
    if (body.rule_id is None) == (body.rule is None):
        raise InvalidInput("rule_id", "give rule_id or rule")
    if body.case_id is None and body.case_number is None:
        raise InvalidInput("case_number", "give case_number or case_id")
    async with request.app[DB].acquire() as conn:
        case_id = await rule_store.case_id_of(conn, body.case_number, body.case_id)
        if body.rule is not None:
            spec = await rule_engine.check(conn, body.rule)
            rule = rule_store.draft(spec, actor(request))
        else:
            rule = await rule_store.get_rule(conn, body.rule_id or 0)
        return await rule_engine.dry_run(conn, case_id, rule)


@endpoints.get(
    "/api/v1/case-rules/{rule_id}/versions",
    permission=PERMISSION,
    response=list[CaseRuleVersion],
    errors=(404,),
)
async def versions(request: web.Request) -> list[CaseRuleVersion]:
    """Every saved state of a rule, newest first, with who and when."""
    async with request.app[DB].acquire() as conn:
        return await rule_store.versions(conn, path_int(request, "rule_id"))


@endpoints.get(
    "/api/v1/case-rules/{rule_id}/versions/{version}/diff",
    permission=PERMISSION,
    query=DiffQuery,
    response=list[CaseRuleDiff],
    errors=(400, 404),
)
async def diff(request: web.Request, query: DiffQuery) -> list[CaseRuleDiff]:
    """The fields that differ between two versions (``against`` defaults to the previous)."""
    version = path_int(request, "version")
    against = query.against or version - 1
    if against < 1:
        raise InvalidInput("against", "version 1 has no previous version")
    async with request.app[DB].acquire() as conn:
        return await rule_store.diff(conn, path_int(request, "rule_id"), against, version)


@endpoints.post(
    "/api/v1/case-rules/{rule_id}/versions/{version}/rollback",
    permission=PERMISSION,
    response=CaseRule,
    errors=(400, 404, 409),
)
async def rollback(request: web.Request) -> CaseRule:
    """Make an old version's content the rule's newest version."""
    async with request.app[DB].acquire() as conn:
        return await rule_store.rollback(
            conn, actor(request), path_int(request, "rule_id"), path_int(request, "version")
        )


@endpoints.get(
    "/api/v1/cases/{case_id}/rule-runs", permission="cases.read", response=list[CaseRuleRun]
)
async def case_runs(request: web.Request) -> list[CaseRuleRun]:
    """The rules that ran on a case, newest first."""
    async with request.app[DB].acquire() as conn:
        return await rule_store.runs(conn, path_int(request, "case_id"))


@endpoints.get("/api/v1/case-rule-alerts", permission=PERMISSION, response=list[CaseRuleAlert])
async def alerts(request: web.Request) -> list[CaseRuleAlert]:
    """The supervisors' notices raised by rules, newest first."""
    async with request.app[DB].acquire() as conn:
        return await rule_store.alerts(conn)
