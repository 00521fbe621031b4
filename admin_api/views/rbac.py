"""The role-permission matrix, editable by an administrator."""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web

from admin_api.routing import EndpointTable
from admin_api.security import actor
from admin_api.typedefs import DB
from crm import rbac
from crm.rbac import Permission, Role

endpoints = EndpointTable("rbac")

PermissionList = Annotated[
    list[Annotated[str, msgspec.Meta(max_length=100)]], msgspec.Meta(max_length=500)
]


class RolePermissions(msgspec.Struct, forbid_unknown_fields=True):
    permissions: PermissionList


class RoleCreate(msgspec.Struct, forbid_unknown_fields=True):
    code: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{1,62}$")]
    name_uk: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    name_en: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    description: Annotated[str, msgspec.Meta(max_length=1000)] = ""
    permissions: PermissionList = []


@endpoints.get("/api/v1/permissions", permission="rbac.read", response=list[Permission])
async def list_permissions(request: web.Request) -> list[Permission]:
    """Every permission an endpoint can require."""
    async with request.app[DB].acquire() as conn:
        return await rbac.list_permissions(conn)


@endpoints.get("/api/v1/roles", permission="rbac.read", response=list[Role])
async def list_roles(request: web.Request) -> list[Role]:
    """Roles with their permissions: the whole matrix."""
    async with request.app[DB].acquire() as conn:
        return await rbac.list_roles(conn)


@endpoints.post(
    "/api/v1/roles",
    permission="rbac.manage",
    body=RoleCreate,
    response=Role,
    status=201,
    errors=(400, 409),
)
async def create_role(request: web.Request, body: RoleCreate) -> Role:
    """Add a role (e.g. a quality manager) with its permissions."""
    async with request.app[DB].acquire() as conn:
        return await rbac.create_role(
            conn,
            actor(request),
            code=body.code,
            name_uk=body.name_uk,
            name_en=body.name_en,
            description=body.description,
            permissions=body.permissions,
        )


@endpoints.put(
    "/api/v1/roles/{role}/permissions",
    permission="rbac.manage",
    body=RolePermissions,
    response=Role,
    errors=(400, 404, 409),
)
async def set_role_permissions(request: web.Request, body: RolePermissions) -> Role:
    """Replace a role's permissions; takes effect on the next request of its users."""
    async with request.app[DB].acquire() as conn:
        return await rbac.set_role_permissions(
            conn, actor(request), request.match_info["role"], body.permissions
        )
