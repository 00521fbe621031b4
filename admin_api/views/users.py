"""Staff user administration."""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web

from admin_api import paging
from admin_api.routing import EndpointTable, path_int
from admin_api.security import actor
from admin_api.typedefs import DB
from admin_api.views.auth import Login, Secret, password_policy
from crm import users
from crm.users import User
from herald.bounds import IdOrZero

endpoints = EndpointTable("users")

FullName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Email = Annotated[str, msgspec.Meta(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)]
RoleList = Annotated[list[Annotated[str, msgspec.Meta(max_length=63)]], msgspec.Meta(max_length=20)]


class UserCreate(msgspec.Struct, forbid_unknown_fields=True):
    login: Annotated[Login, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{2,63}$")]
    full_name: FullName
    password: Secret
    roles: RoleList
    email: Email | None = None


class UserPatch(msgspec.Struct, forbid_unknown_fields=True):
    full_name: FullName | None = None
    email: Email | None = None
    is_active: bool | None = None
    roles: RoleList | None = None
    unlock: bool = False


class PasswordReset(msgspec.Struct, forbid_unknown_fields=True):
    new_password: Secret


class UserPage(msgspec.Struct):
    items: list[User]
    next_after_id: Annotated[int | None, paging.DEPRECATED_FIELD]
    next_cursor: str | None = None


class UserQuery(msgspec.Struct, forbid_unknown_fields=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100
    after_id: Annotated[IdOrZero, paging.DEPRECATED_PARAM] = 0
    cursor: paging.Cursor | None = None


@endpoints.get("/api/v1/users", permission="users.read", query=UserQuery, response=UserPage)
async def list_users(request: web.Request, query: UserQuery) -> UserPage:
    """Users in id order, a page at a time (pass next_cursor back as cursor)."""
    after_id = paging.start(query.cursor, query.after_id) or 0
    async with request.app[DB].acquire() as conn:
        items = await users.list_users(conn, limit=query.limit, after_id=after_id)
    return UserPage(items, *paging.following(items, query.limit, lambda i: i.id))


@endpoints.post(
    "/api/v1/users",
    permission="users.manage",
    body=UserCreate,
    response=User,
    status=201,
    errors=(400, 409),
)
async def create_user(request: web.Request, body: UserCreate) -> User:
    """Create a user with roles; the password must satisfy the policy."""
    async with request.app[DB].acquire() as conn:
        return await users.create_user(
            conn,
            actor(request),
            password_policy(request),
            login=body.login,
            full_name=body.full_name,
            password=body.password,
            roles=body.roles,
            email=body.email,
        )


@endpoints.get("/api/v1/users/{user_id}", permission="users.read", response=User, errors=(404,))
async def get_user(request: web.Request) -> User:
    """One user."""
    async with request.app[DB].acquire() as conn:
        return await users.get_user(conn, path_int(request, "user_id"))


@endpoints.patch(
    "/api/v1/users/{user_id}",
    permission="users.manage",
    body=UserPatch,
    response=User,
    errors=(400, 404),
)
async def update_user(request: web.Request, body: UserPatch) -> User:
    """Change name, e-mail, roles, activity; unlock a locked-out user."""
    async with request.app[DB].acquire() as conn:
        return await users.update_user(
            conn,
            actor(request),
            path_int(request, "user_id"),
            full_name=body.full_name,
            email=body.email,
            is_active=body.is_active,
            roles=body.roles,
            unlock=body.unlock,
        )


@endpoints.post(
    "/api/v1/users/{user_id}/password",
    permission="users.manage",
    body=PasswordReset,
    status=204,
    errors=(400, 404),
)
async def reset_password(request: web.Request, body: PasswordReset) -> None:
    """Set a user's password (an admin reset); all their sessions end."""
    async with request.app[DB].acquire() as conn:
        await users.set_password(
            conn,
            actor(request),
            password_policy(request),
            path_int(request, "user_id"),
            body.new_password,
        )
