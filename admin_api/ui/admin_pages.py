"""The administrator's workspace: users, roles and the role-permission matrix, case
settings and integrations. Every action calls the same domain functions as the API
(``/api/v1/users``, ``/api/v1/roles``, ``/api/v1/case-*``, ``/api/v1/cti/extensions``),
so the same checks and the same audit entries apply.

Permissions are not cached: the security middleware reads a session's roles and their
permissions on every request (``crm.users.resolve_session``), so a change of the matrix
applies to the very next request of every user of the role.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from aiohttp import web

from admin_api.routing import EndpointTable, decode_query, path_int
from admin_api.security import actor
from admin_api.typedefs import DB, SETTINGS
from admin_api.ui import forms
from admin_api.ui.rendering import render
from admin_api.views.rbac import RoleCreate
from admin_api.views.users import PasswordReset, UserCreate
from crm import cti_extensions, rbac, users
from crm.cases import (
    agents,
    calendars,
    categories,
    classify,
    groups,
    routing,
    sla_config,
    transitions,
)
from crm.cases.agents import AgentSkillsPatch
from crm.cases.calendars import BusinessCalendarSpec, Holiday, WorkInterval
from crm.cases.categories import CaseCategoryPatch, CaseCategorySpec
from crm.cti_extensions import ExtensionSpec
from crm.users import PasswordPolicy
from dispatcher.realtime import case_notify, producers
from herald.errors import HeraldError, InvalidInput
from rules import rate_limit

endpoints = EndpointTable("ui")

USERS_LIMIT = 500


def _policy(request: web.Request) -> PasswordPolicy:
    return PasswordPolicy(min_length=request.app[SETTINGS].password_min_length)


@endpoints.get("/ui/admin", permission="users.manage", response=str, media_type="text/html")
async def admin_home(request: web.Request) -> web.Response:
    """The administration's first page: the users."""
    return await render(request, "admin_users.html", await _users(request))


# -- Users ---------------------------------------------------------------------------


async def _users(request: web.Request, **extra: object) -> dict[str, object]:
    async with request.app[DB].acquire() as conn:
        found = await users.list_users(conn, limit=USERS_LIMIT)
        roles = await rbac.list_roles(conn)
    return {
        "users": found,
        "roles": roles,
        "min_length": request.app[SETTINGS].password_min_length,
        "errors": {},
        "values": {},
        **extra,
    }


@endpoints.get("/ui/admin/users", permission="users.manage", response=str, media_type="text/html")
async def users_page(request: web.Request) -> web.Response:
    """Users with their roles, state and last login; create, block, unlock, reset."""
    return await render(request, "admin_users.html", await _users(request))


@endpoints.post(
    "/ui/admin/users",
    permission="users.manage",
    response=str,
    media_type="text/html",
    errors=(400, 409),
)
async def create_user(request: web.Request) -> web.Response:
    """Create a user; a bad field is shown next to it and the form keeps its values."""
    posted = await request.post()
    values = {k: v for k, v in posted.items() if k not in ("password", "csrf_token")}
    try:
        body = await forms.form(request, UserCreate, lists=("roles",))
        async with request.app[DB].acquire() as conn:
            user = await users.create_user(
                conn,
                actor(request),
                _policy(request),
                login=body.login,
                full_name=body.full_name,
                password=body.password,
                roles=body.roles,
                email=body.email,
            )
    except InvalidInput as error:
        field = error.field.split("[")[0]
        ctx = await _users(
            request, errors={field: error}, values=values, chosen=posted.getall("roles", [])
        )
        return await render(request, "_user_form.html", ctx, status=400)
    return await render(
        request,
        "_admin_users_body.html",
        await _users(request, created=user),
        headers={"HX-Retarget": "#admin-users", "HX-Reswap": "outerHTML"},
    )


class ActiveForm(msgspec.Struct):
    active: Literal["true", "false"]


async def _user_row(request: web.Request, user_id: int, done: str) -> web.Response:
    async with request.app[DB].acquire() as conn:
        user = await users.get_user(conn, user_id)
        roles = await rbac.list_roles(conn)
    return await render(
        request,
        "_user_row.html",
        {
            "u": user,
            "roles": roles,
            "done": done,
            "min_length": request.app[SETTINGS].password_min_length,
        },
    )


@endpoints.post(
    r"/ui/admin/users/{user_id:\d+}/active",
    permission="users.manage",
    response=str,
    media_type="text/html",
    errors=(400, 404, 409),
)
async def set_active(request: web.Request) -> web.Response:
    """Block a user (their sessions end at once) or unblock them (lifting lock-outs too)."""
    form = await forms.form(request, ActiveForm)
    user_id = path_int(request, "user_id")
    active = form.active == "true"
    async with request.app[DB].acquire() as conn:
        await users.update_user(conn, actor(request), user_id, is_active=active, unlock=active)
    return await _user_row(request, user_id, "unblocked" if active else "blocked")


@endpoints.post(
    r"/ui/admin/users/{user_id:\d+}/unlock",
    permission="users.manage",
    response=str,
    media_type="text/html",
    errors=(404,),
)
async def unlock_user(request: web.Request) -> web.Response:
    """Lift a lock-out after failed logins."""
    user_id = path_int(request, "user_id")
    async with request.app[DB].acquire() as conn:
        await users.update_user(conn, actor(request), user_id, unlock=True)
    return await _user_row(request, user_id, "unlocked")


@endpoints.post(
    r"/ui/admin/users/{user_id:\d+}/password",
    permission="users.manage",
    response=str,
    media_type="text/html",
    errors=(400, 404),
)
async def reset_password(request: web.Request) -> web.Response:
    """Set a new password; the user's sessions end and their lock-outs are lifted."""
    body = await forms.form(request, PasswordReset)
    user_id = path_int(request, "user_id")
    async with request.app[DB].acquire() as conn:
        await users.set_password(conn, actor(request), _policy(request), user_id, body.new_password)
    return await _user_row(request, user_id, "password")


class RolesForm(msgspec.Struct):
    roles: list[str] = []


@endpoints.post(
    r"/ui/admin/users/{user_id:\d+}/roles",
    permission="users.manage",
    response=str,
    media_type="text/html",
    errors=(400, 404, 409),
)
async def set_roles(request: web.Request) -> web.Response:
    """Replace a user's roles."""
    form = await forms.form(request, RolesForm, lists=("roles",))
    user_id = path_int(request, "user_id")
    async with request.app[DB].acquire() as conn:
        await users.update_user(conn, actor(request), user_id, roles=form.roles)
    return await _user_row(request, user_id, "roles")


# -- Roles and the permission matrix ---------------------------------------------------


async def _matrix(request: web.Request) -> dict[str, object]:
    async with request.app[DB].acquire() as conn:
        roles = await rbac.list_roles(conn)
        permissions = await rbac.list_permissions(conn)
    return {
        "roles": roles,
        "permissions": permissions,
        "granted": {(r.code, p) for r in roles for p in r.permissions},
    }


@endpoints.get("/ui/admin/roles", permission="rbac.read", response=str, media_type="text/html")
async def roles_page(request: web.Request) -> web.Response:
    """The role-permission matrix: a permission per row, a role per column."""
    return await render(request, "admin_roles.html", await _matrix(request))


class CellForm(msgspec.Struct):
    granted: Literal["true", "false"] = "false"


@endpoints.post(
    r"/ui/admin/roles/{role}/permissions/{permission}",
    permission="rbac.manage",
    response=str,
    media_type="text/html",
    errors=(400, 404),
)
async def set_cell(request: web.Request) -> web.Response:
    """Grant or take away one permission of a role; journalled, in force on the next
    request. A refused change (it would leave nobody able to administer) leaves the
    cell as it was and says why."""
    form = await forms.form(request, CellForm)
    role_code, permission = request.match_info["role"], request.match_info["permission"]
    error: HeraldError | None = None
    async with request.app[DB].acquire() as conn:
        role = await rbac.get_role(conn, role_code)
        wanted = set(role.permissions)
        if form.granted == "true":
            wanted.add(permission)
        else:
            wanted.discard(permission)
        try:
            role = await rbac.set_role_permissions(conn, actor(request), role_code, sorted(wanted))
        except HeraldError as found:
            error = found
    return await render(
        request,
        "_matrix_cell.html",
        {
            "r": role,
            "p_code": permission,
            "on": permission in role.permissions,
            "error": error,
            "saved": error is None,
        },
    )


@endpoints.post(
    "/ui/admin/roles",
    permission="rbac.manage",
    response=str,
    media_type="text/html",
    errors=(400, 409),
)
async def create_role(request: web.Request) -> web.Response:
    """Add a role (its permissions are then ticked in the matrix)."""
    body = await forms.form(request, RoleCreate)
    async with request.app[DB].acquire() as conn:
        await rbac.create_role(
            conn,
            actor(request),
            code=body.code,
            name_uk=body.name_uk,
            name_en=body.name_en,
            description=body.description,
            permissions=[],
        )
    return await render(
        request,
        "_matrix.html",
        await _matrix(request),
        headers={"HX-Retarget": "#matrix", "HX-Reswap": "outerHTML"},
    )


# -- Case settings ---------------------------------------------------------------------


async def _case_settings(request: web.Request) -> dict[str, object]:
    async with request.app[DB].acquire() as conn:
        cats = await categories.list_categories(conn, include_inactive=True)
        table = await transitions.table(conn)
        policies = await sla_config.list_policies(conn)
        escalations = await sla_config.list_rules(conn)
        cals = await calendars.list_calendars(conn)
        found_groups = await groups.list_groups(conn)
        rules = await groups.list_rules(conn)
        loads = await routing.agent_loads(conn)
        classification = await classify.list_rules(conn)
        notifications = await case_notify.list_rules(conn)
        skills = {a.user_id: await agents.get_agent(conn, a.user_id) for a in loads}
    children: dict[int | None, list[categories.CaseCategory]] = {}
    for c in cats:
        children.setdefault(c.parent_id, []).append(c)
    tree: list[tuple[int, categories.CaseCategory]] = []

    def walk(parent: int | None, depth: int) -> None:
        for c in children.get(parent, []):
            tree.append((depth, c))
            walk(c.id, depth + 1)

    walk(None, 0)
    return {
        "tree": tree,
        "categories": cats,
        "category_names": {c.id: c for c in cats},
        "table": table,
        "allowed": {(t.from_status, t.to_status) for t in table.transitions},
        "policies": policies,
        "escalations": escalations,
        "calendars": cals,
        "calendar_names": {c.id: c for c in cals},
        "groups": found_groups,
        "routing_rules": rules,
        "agents": loads,
        "skills": skills,
        "classification": classification,
        "notifications": notifications,
        "weekdays": ("mon", "tue", "wed", "thu", "fri", "sat", "sun"),
    }


@endpoints.get("/ui/admin/cases", permission="cases.admin", response=str, media_type="text/html")
async def case_settings(request: web.Request) -> web.Response:
    """Case settings: the category tree, the status model and its transitions, SLA
    policies and business calendars, routing groups with skills and capacity,
    classification, escalation and notification rules."""
    return await render(request, "admin_cases.html", await _case_settings(request))


@endpoints.post(
    "/ui/admin/cases/categories",
    permission="cases.admin",
    response=str,
    media_type="text/html",
    errors=(400, 404, 409),
)
async def add_category(request: web.Request) -> web.Response:
    """Add a category (a topic, or a subtopic under ``parent_id``)."""
    form = await forms.form(request, CaseCategorySpec)
    async with request.app[DB].acquire() as conn:
        await categories.create_category(conn, actor(request), form)
    return await _categories_block(request)


async def _categories_block(request: web.Request) -> web.Response:
    return await render(request, "_admin_categories.html", await _case_settings(request))


@endpoints.post(
    r"/ui/admin/cases/categories/{category_id:\d+}/active",
    permission="cases.admin",
    response=str,
    media_type="text/html",
    errors=(400, 404, 409),
)
async def category_active(request: web.Request) -> web.Response:
    """Switch a category on or off (an inactive one is not offered for new cases)."""
    form = await forms.form(request, ActiveForm)
    async with request.app[DB].acquire() as conn:
        await categories.update_category(
            conn,
            actor(request),
            path_int(request, "category_id"),
            CaseCategoryPatch(is_active=form.active == "true"),
        )
    return await _categories_block(request)


class CapacityForm(msgspec.Struct):
    capacity: Annotated[int, msgspec.Meta(ge=0, le=1000)]


@endpoints.post(
    r"/ui/admin/cases/agents/{user_id:\d+}/capacity",
    permission="cases.route",
    response=str,
    media_type="text/html",
    errors=(400, 404),
)
async def agent_capacity(request: web.Request) -> web.Response:
    """Set how many open cases an agent may hold at once."""
    form = await forms.form(request, CapacityForm)
    patch = decode_query({"capacity": form.capacity}, AgentSkillsPatch)
    async with request.app[DB].acquire() as conn:
        await agents.update_skills(conn, actor(request), path_int(request, "user_id"), patch)
    return await render(request, "_admin_groups.html", await _case_settings(request))


class HolidayForm(msgspec.Struct):
    date: str
    name: str | None = None
    start: str | None = None
    end: str | None = None


@endpoints.post(
    r"/ui/admin/cases/calendars/{calendar_id:\d+}/holidays",
    permission="cases.admin",
    response=str,
    media_type="text/html",
    errors=(400, 404, 409),
)
async def add_holiday(request: web.Request) -> web.Response:
    """Add a day off, or a shortened day (its working hours given), to a calendar; the
    open cases on it are planned again."""
    form = await forms.form(request, HolidayForm)
    hours = []
    if form.start or form.end:
        hours = [WorkInterval(form.start or "", form.end or "")]
    given = {"date": form.date, "name": form.name}
    day = decode_query({k: v for k, v in given.items() if v is not None}, Holiday)
    calendar_id = path_int(request, "calendar_id")
    async with request.app[DB].acquire() as conn:
        cal = await calendars.get_calendar(conn, calendar_id)
        kept = [h for h in cal.holidays if h.date != day.date]
        spec = BusinessCalendarSpec(
            name=cal.name,
            week=cal.week,
            time_zone=cal.time_zone,
            holidays=sorted(
                [*kept, msgspec.structs.replace(day, hours=hours)], key=lambda h: h.date
            ),
        )
        await calendars.update_calendar(conn, actor(request), calendar_id, spec)
    return await render(request, "_admin_calendars.html", await _case_settings(request))


# -- Integrations ----------------------------------------------------------------------


def _masked(secret: str) -> str:
    return "••••••••" if secret else ""


async def _integrations(request: web.Request) -> dict[str, object]:
    s = request.app[SETTINGS]
    async with request.app[DB].acquire() as conn:
        extensions = await cti_extensions.list_mappings(conn)
        found = await producers.list_producers(conn)
        limits = await rate_limit.list_limits(conn)
    return {
        "extensions": extensions,
        "producers": found,
        "limits": limits,
        "providers": [
            ("SMS", s.sms_gateway_url),
            ("Viber", s.viber_api_url),
            ("E-mail (SMTP)", f"{s.smtp_host}:{s.smtp_port} · {s.smtp_sender}"),
            ("Billing", s.billing_url),
            ("Public URL", s.public_base_url),
        ],
        "secrets": [
            ("HERALD_PROVIDER_API_TOKEN", _masked(s.provider_api_token)),
            ("HERALD_UNSUBSCRIBE_SECRET", _masked(s.unsubscribe_secret)),
        ],
    }


@endpoints.get(
    "/ui/admin/integrations", permission="users.manage", response=str, media_type="text/html"
)
async def integrations_page(request: web.Request) -> web.Response:
    """VICIdial extensions, event producers, provider settings (secrets masked), rate limits."""
    return await render(request, "admin_integrations.html", await _integrations(request))


@endpoints.post(
    "/ui/admin/integrations/extensions",
    permission="users.manage",
    response=str,
    media_type="text/html",
    errors=(400, 404),
)
async def set_extension(request: web.Request) -> web.Response:
    """Map a VICIdial extension to an operator's login (replacing its mapping)."""
    spec = await forms.form(request, ExtensionSpec)
    async with request.app[DB].acquire() as conn:
        await cti_extensions.set_mapping(conn, actor(request), spec)
    return await render(request, "_admin_extensions.html", await _integrations(request))


class ExtensionDelete(msgspec.Struct):
    extension: str


@endpoints.post(
    "/ui/admin/integrations/extensions/delete",
    permission="users.manage",
    response=str,
    media_type="text/html",
    errors=(400, 404),
)
async def delete_extension(request: web.Request) -> web.Response:
    """Remove an extension's mapping."""
    form = await forms.form(request, ExtensionDelete)
    async with request.app[DB].acquire() as conn:
        await cti_extensions.delete_mapping(conn, actor(request), form.extension)
    return await render(request, "_admin_extensions.html", await _integrations(request))
