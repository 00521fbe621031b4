"""Case routing (issue 5, point 6): groups, routing rules, agent presence and skills,
take next, reassignment, and hand-off tasks."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec
from aiohttp import web

from admin_api.routing import EndpointTable, path_int
from admin_api.security import actor, principal
from admin_api.typedefs import DB
from crm.cases import agents, groups, routing, rule_engine, tasks
from crm.cases.agents import Agent, AgentSkillsPatch, PresenceChange, PresenceSpec
from crm.cases.groups import (
    CaseGroup,
    CaseGroupMembers,
    CaseGroupPatch,
    CaseGroupSpec,
    CaseRoutingRule,
    CaseRoutingRuleSpec,
    CaseRoutingSettings,
    CaseRoutingSettingsSpec,
    GroupCode,
)
from crm.cases.routing import AgentLoad, Reassignment
from crm.cases.tasks import CaseTask, CaseTaskClose, CaseTaskQuery, CaseTaskSpec
from crm.cases.types import Case
from herald.bounds import Id
from herald.errors import InvalidInput

endpoints = EndpointTable("case-routing")


class AgentLoadQuery(msgspec.Struct, forbid_unknown_fields=True):
    group_code: GroupCode | None = None


class PresenceHistoryQuery(msgspec.Struct, forbid_unknown_fields=True):
    user_id: Id | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=5000)] = 1000


def _group_code(request: web.Request) -> str:
    code = request.match_info["code"]
    try:
        return msgspec.convert(code, GroupCode)
    except msgspec.ValidationError:
        raise InvalidInput("code", f"not a group code: {code!r}") from None


# -- groups and rules ---------------------------------------------------------------------------


@endpoints.get("/api/v1/case-groups", permission="cases.read", response=list[CaseGroup])
async def list_groups(request: web.Request) -> list[CaseGroup]:
    """Groups (departments) with their routing mode and members."""
    async with request.app[DB].acquire() as conn:
        return await groups.list_groups(conn)


@endpoints.post(
    "/api/v1/case-groups",
    permission="cases.admin",
    body=CaseGroupSpec,
    response=CaseGroup,
    status=201,
    errors=(400, 409),
)
async def create_group(request: web.Request, body: CaseGroupSpec) -> CaseGroup:
    """Add a group: code, names, routing mode (round_robin or skills)."""
    async with request.app[DB].acquire() as conn:
        return await groups.create_group(conn, actor(request), body)


@endpoints.patch(
    "/api/v1/case-groups/{code}",
    permission="cases.admin",
    body=CaseGroupPatch,
    response=CaseGroup,
    errors=(400, 404),
)
async def update_group(request: web.Request, body: CaseGroupPatch) -> CaseGroup:
    """Rename, change the mode, deactivate or reactivate a group."""
    async with request.app[DB].acquire() as conn:
        return await groups.update_group(conn, actor(request), _group_code(request), body)


@endpoints.put(
    "/api/v1/case-groups/{code}/members",
    permission="cases.admin",
    body=CaseGroupMembers,
    response=CaseGroup,
    errors=(400, 404),
)
async def set_members(request: web.Request, body: CaseGroupMembers) -> CaseGroup:
    """Replace the group's members (a removed member keeps their assigned cases)."""
    async with request.app[DB].acquire() as conn:
        return await groups.set_members(conn, actor(request), _group_code(request), body.user_ids)


@endpoints.get(
    "/api/v1/case-routing-rules", permission="cases.admin", response=list[CaseRoutingRule]
)
async def list_rules(request: web.Request) -> list[CaseRoutingRule]:
    """Routing rules in the order they are tried (position, then id)."""
    async with request.app[DB].acquire() as conn:
        return await groups.list_rules(conn)


@endpoints.post(
    "/api/v1/case-routing-rules",
    permission="cases.admin",
    body=CaseRoutingRuleSpec,
    response=CaseRoutingRule,
    status=201,
    errors=(400,),
)
async def create_rule(request: web.Request, body: CaseRoutingRuleSpec) -> CaseRoutingRule:
    """Add a rule: channels, categories (and below), types, priorities -> a group."""
    async with request.app[DB].acquire() as conn:
        return await groups.create_rule(conn, actor(request), body)


@endpoints.put(
    "/api/v1/case-routing-rules/{rule_id}",
    permission="cases.admin",
    body=CaseRoutingRuleSpec,
    response=CaseRoutingRule,
    errors=(400, 404),
)
async def update_rule(request: web.Request, body: CaseRoutingRuleSpec) -> CaseRoutingRule:
    """Replace a rule."""
    async with request.app[DB].acquire() as conn:
        return await groups.update_rule(conn, actor(request), path_int(request, "rule_id"), body)


@endpoints.delete(
    "/api/v1/case-routing-rules/{rule_id}", permission="cases.admin", status=204, errors=(404,)
)
async def delete_rule(request: web.Request) -> None:
    """Delete a rule (cases stay where it put them)."""
    async with request.app[DB].acquire() as conn:
        await groups.delete_rule(conn, actor(request), path_int(request, "rule_id"))


@endpoints.get(
    "/api/v1/case-routing-settings", permission="cases.read", response=CaseRoutingSettings
)
async def get_settings(request: web.Request) -> CaseRoutingSettings:
    """The default group of cases no rule matches."""
    async with request.app[DB].acquire() as conn:
        return await groups.get_settings(conn)


@endpoints.put(
    "/api/v1/case-routing-settings",
    permission="cases.admin",
    body=CaseRoutingSettingsSpec,
    response=CaseRoutingSettings,
    errors=(400,),
)
async def put_settings(request: web.Request, body: CaseRoutingSettingsSpec) -> CaseRoutingSettings:
    """Set the default group (null: cases no rule matches stay without a group)."""
    async with request.app[DB].acquire() as conn:
        return await groups.put_settings(conn, actor(request), body)


# -- agents ---------------------------------------------------------------------------------


@endpoints.get("/api/v1/me/presence", permission="cases.manage", response=Agent)
async def my_presence(request: web.Request) -> Agent:
    """My presence, capacity and skills."""
    async with request.app[DB].acquire() as conn:
        user_id = principal(request).user_id
        await agents.ensure_agent(conn, user_id)
        return await agents.get_agent(conn, user_id)


@endpoints.put(
    "/api/v1/me/presence",
    permission="cases.manage",
    body=PresenceSpec,
    response=Agent,
    errors=(400,),
)
async def set_my_presence(request: web.Request, body: PresenceSpec) -> Agent:
    """Set my presence: online gets new cases; busy, away and offline keep their cases but
    get no new ones from routing (busy may still take next)."""
    async with request.app[DB].acquire() as conn:
        return await agents.set_presence(
            conn, actor(request), principal(request).user_id, body.presence
        )


@endpoints.get(
    "/api/v1/case-agents",
    permission="cases.route",
    query=AgentLoadQuery,
    response=list[AgentLoad],
    errors=(400,),
)
async def list_agents(request: web.Request, query: AgentLoadQuery) -> list[AgentLoad]:
    """Every agent (or a group's): presence, capacity, open assigned cases, groups."""
    async with request.app[DB].acquire() as conn:
        return await routing.agent_loads(conn, query.group_code)


@endpoints.put(
    "/api/v1/case-agents/{user_id}/presence",
    permission="cases.route",
    body=PresenceSpec,
    response=Agent,
    errors=(400,),
)
async def set_presence(request: web.Request, body: PresenceSpec) -> Agent:
    """Set an agent's presence (a supervisor)."""
    async with request.app[DB].acquire() as conn:
        return await agents.set_presence(
            conn, actor(request), path_int(request, "user_id"), body.presence
        )


@endpoints.patch(
    "/api/v1/case-agents/{user_id}",
    permission="cases.route",
    body=AgentSkillsPatch,
    response=Agent,
    errors=(400,),
)
async def update_agent(request: web.Request, body: AgentSkillsPatch) -> Agent:
    """Set an agent's capacity and skills (languages, channels, categories)."""
    async with request.app[DB].acquire() as conn:
        return await agents.update_skills(conn, actor(request), path_int(request, "user_id"), body)


@endpoints.get(
    "/api/v1/case-agent-presence",
    permission="cases.route",
    query=PresenceHistoryQuery,
    response=list[PresenceChange],
    errors=(400,),
)
async def presence_history(
    request: web.Request, query: PresenceHistoryQuery
) -> list[PresenceChange]:
    """Presence changes with their times (for load reports), oldest first."""
    async with request.app[DB].acquire() as conn:
        return await agents.presence_history(
            conn, query.user_id, since=query.since, until=query.until, limit=query.limit
        )


# -- assignment -----------------------------------------------------------------------------


@endpoints.post("/api/v1/cases/next", permission="cases.manage", response=Case, errors=(409,))
async def take_next(request: web.Request) -> Case | None:
    """Claim the best unassigned case of my groups for me; 204 when there is none."""
    async with request.app[DB].acquire() as conn:
        return await routing.take_next(conn, actor(request))


@endpoints.post(
    "/api/v1/cases/{case_id}/assignment",
    permission="cases.route",
    body=Reassignment,
    response=Case,
    errors=(400, 404, 409),
)
async def reassign(request: web.Request, body: Reassignment) -> Case:
    """Reassign a case to a user and/or a group (journalled; the rules no longer move it)."""
    async with request.app[DB].acquire() as conn:
        return await rule_engine.changing_case(
            conn, routing.reassign(conn, actor(request), path_int(request, "case_id"), body)
        )


# -- hand-off tasks -------------------------------------------------------------------------


@endpoints.post(
    "/api/v1/cases/{case_id}/tasks",
    permission="cases.manage",
    body=CaseTaskSpec,
    response=CaseTask,
    status=201,
    errors=(400, 404, 409),
)
async def create_task(request: web.Request, body: CaseTaskSpec) -> CaseTask:
    """Hand work on the case to a group (optionally a member) with its own deadline."""
    async with request.app[DB].acquire() as conn:
        return await tasks.create_task(conn, actor(request), path_int(request, "case_id"), body)


@endpoints.get(
    "/api/v1/cases/{case_id}/tasks", permission="cases.read", response=list[CaseTask], errors=(404,)
)
async def case_tasks(request: web.Request) -> list[CaseTask]:
    """The case's tasks, oldest first."""
    async with request.app[DB].acquire() as conn:
        return await tasks.case_tasks(conn, path_int(request, "case_id"))


@endpoints.get(
    "/api/v1/case-tasks",
    permission="cases.read",
    query=CaseTaskQuery,
    response=list[CaseTask],
    errors=(400,),
)
async def list_tasks(request: web.Request, query: CaseTaskQuery) -> list[CaseTask]:
    """Tasks by group, assignee, status, overdue, or mine; soonest deadline first."""
    async with request.app[DB].acquire() as conn:
        return await tasks.list_tasks(conn, actor(request), query)


async def _close(request: web.Request, body: CaseTaskClose, status: str) -> CaseTask:
    async with request.app[DB].acquire() as conn:
        return await rule_engine.changing(
            conn,
            tasks.close_task(
                conn,
                actor(request),
                path_int(request, "task_id"),
                status,
                body.result,
                supervisor="cases.route" in principal(request).permissions,
            ),
            lambda task: task.case_id,
        )


@endpoints.post(
    "/api/v1/case-tasks/{task_id}/done",
    permission="cases.manage",
    body=CaseTaskClose,
    response=CaseTask,
    errors=(404, 409),
)
async def complete_task(request: web.Request, body: CaseTaskClose) -> CaseTask:
    """Mark a task done, with its result."""
    return await _close(request, body, "done")


@endpoints.post(
    "/api/v1/case-tasks/{task_id}/cancel",
    permission="cases.manage",
    body=CaseTaskClose,
    response=CaseTask,
    errors=(404, 409),
)
async def cancel_task(request: web.Request, body: CaseTaskClose) -> CaseTask:
    """Cancel a task."""
    return await _close(request, body, "cancelled")
