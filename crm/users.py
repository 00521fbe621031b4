"""Staff users: password policy, argon2 hashing, login with lock-out, sessions."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
import secrets
from collections.abc import Sequence

import asyncpg
import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from crm import login_guard
from crm.login_guard import LoginPolicy
from crm.rbac import keeping_an_administrator
from herald import audit
from herald.audit import Actor, Change
from herald.errors import (
    AccountLocked,
    AuthenticationFailed,
    Conflict,
    InvalidInput,
    NotFound,
)


class _Hashing:
    """The process's argon2id parameters: set once at start-up by ``configure_hashing``."""

    hasher = PasswordHasher()
    # Verified when the login is unknown, so a wrong login costs as long as a wrong
    # password and response times do not tell which logins exist.
    dummy_hash = hasher.hash(secrets.token_urlsafe(16))


def configure_hashing(*, time_cost: int, memory_kib: int) -> None:
    """Hash new passwords with these argon2id costs (a stored hash of other costs is
    verified as it is and rehashed at the next successful login)."""
    current = _Hashing.hasher
    if (current.time_cost, current.memory_cost) == (time_cost, memory_kib):
        return
    _Hashing.hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib)
    _Hashing.dummy_hash = _Hashing.hasher.hash(secrets.token_urlsafe(16))


class PasswordPolicy(msgspec.Struct, frozen=True):
    """What a password must satisfy; min_length comes from settings."""

    min_length: int = 12

    def problems(self, password: str, login: str = "") -> list[str]:
        """Every rule the password breaks, in words a user can act on (empty: acceptable)."""
        found = []
        if len(password) < self.min_length:
            found.append(f"at least {self.min_length} characters")
        if len(password) > 256:
            found.append("at most 256 characters")
        if not re.search(r"[a-zа-яіїєґ]", password):
            found.append("a lower-case letter")
        if not re.search(r"[A-ZА-ЯІЇЄҐ]", password):
            found.append("an upper-case letter")
        if not re.search(r"\d", password):
            found.append("a digit")
        if not re.search(r"[^\w\s]|_", password):
            found.append("a symbol such as ! ? # %")
        if login and login.lower() in password.lower():
            found.append("not containing the login")
        return found

    def check(self, password: str, login: str = "", *, field: str = "password") -> None:
        """Raise InvalidInput naming ``field`` when the password breaks a rule."""
        found = self.problems(password, login)
        if found:
            raise InvalidInput(field, "password must have " + ", ".join(found))


class Principal(msgspec.Struct, frozen=True):
    """The authenticated user behind a request, with the permissions of all their roles."""

    user_id: int
    login: str
    full_name: str
    roles: frozenset[str]
    permissions: frozenset[str]

    def actor(self, request_id: str | None) -> Actor:
        return Actor(login=self.login, id=self.user_id, request_id=request_id)


class User(msgspec.Struct, frozen=True):
    id: int
    login: str
    full_name: str
    email: str | None
    is_active: bool
    roles: list[str]
    locked_until: dt.datetime | None
    last_login_at: dt.datetime | None
    created_at: dt.datetime


async def hash_password(password: str) -> str:
    """argon2id hash; run off the event loop (it costs tens of milliseconds of CPU)."""
    return await asyncio.get_running_loop().run_in_executor(None, _Hashing.hasher.hash, password)


async def _verify(password_hash: str, password: str) -> bool:
    def verify() -> bool:
        try:
            return _Hashing.hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.get_running_loop().run_in_executor(None, verify)


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


_USER_SELECT = """
    SELECT u.id, u.login, u.full_name, u.email, u.is_active, u.locked_until, u.last_login_at,
           u.created_at,
           coalesce(array_agg(ur.role_code ORDER BY ur.role_code)
                    FILTER (WHERE ur.role_code IS NOT NULL), '{}') AS roles
    FROM users u LEFT JOIN user_roles ur ON ur.user_id = u.id
"""


async def get_user(conn: asyncpg.Connection, user_id: int) -> User:
    row = await conn.fetchrow(_USER_SELECT + " WHERE u.id = $1 GROUP BY u.id", user_id)
    if row is None:
        raise NotFound(f"user {user_id} does not exist")
    return User(**dict(row))


async def list_users(conn: asyncpg.Connection, *, limit: int, after_id: int = 0) -> list[User]:
    rows = await conn.fetch(
        _USER_SELECT + " WHERE u.id > $1 GROUP BY u.id ORDER BY u.id LIMIT $2", after_id, limit
    )
    return [User(**dict(r)) for r in rows]


async def _check_roles(conn: asyncpg.Connection, roles: Sequence[str]) -> None:
    known = {r["code"] for r in await conn.fetch("SELECT code FROM roles")}
    unknown = sorted(set(roles) - known)
    if unknown:
        raise InvalidInput(
            "roles", f"unknown role(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )


async def create_user(
    conn: asyncpg.Connection,
    actor: Actor,
    policy: PasswordPolicy,
    *,
    login: str,
    full_name: str,
    password: str,
    roles: Sequence[str],
    email: str | None = None,
) -> User:
    """Create a user with roles; the journal gets the creation and each role granted."""
    policy.check(password, login)
    password_hash = await hash_password(password)
    async with conn.transaction():
        await _check_roles(conn, roles)
        try:
            user_id = await conn.fetchval(
                "INSERT INTO users (login, full_name, email, password_hash) VALUES ($1, $2, $3, $4) "
                "RETURNING id",
                login,
                full_name,
                email,
                password_hash,
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(f"login {login!r} is taken") from None
        await conn.executemany(
            "INSERT INTO user_roles (user_id, role_code) VALUES ($1, $2)",
            [(user_id, r) for r in sorted(set(roles))],
        )
        await audit.record(
            conn,
            actor,
            [
                Change(
                    "user",
                    str(user_id),
                    "create",
                    None,
                    None,
                    {"login": login, "full_name": full_name, "email": email},
                ),
                Change("user", str(user_id), "update", "roles", [], sorted(set(roles))),
            ],
        )
        return await get_user(conn, user_id)


async def update_user(
    conn: asyncpg.Connection,
    actor: Actor,
    user_id: int,
    *,
    full_name: str | None = None,
    email: str | None = None,
    is_active: bool | None = None,
    roles: Sequence[str] | None = None,
    unlock: bool = False,
) -> User:
    """Change a user's attributes; deactivation ends their sessions at once.

    Conflict when the change would leave no active user able to manage roles and users.
    """
    async with keeping_an_administrator(conn):
        before = await conn.fetchrow("SELECT * FROM users WHERE id = $1 FOR UPDATE", user_id)
        if before is None:
            raise NotFound(f"user {user_id} does not exist")
        old_roles = sorted(
            r["role_code"]
            for r in await conn.fetch(
                "SELECT role_code FROM user_roles WHERE user_id = $1", user_id
            )
        )
        new: dict[str, object] = {
            k: v
            for k, v in {"full_name": full_name, "email": email, "is_active": is_active}.items()
            if v is not None
        }
        if unlock:
            new.update(locked_until=None, failed_logins=0)
        changes = audit.field_changes("user", user_id, dict(before), new)
        for change in changes:
            await conn.execute(
                f"UPDATE users SET {change.field} = $2, updated_at = herald_now() WHERE id = $1",
                user_id,
                change.new,
            )
        if roles is not None and sorted(set(roles)) != old_roles:
            await _check_roles(conn, roles)
            await conn.execute("DELETE FROM user_roles WHERE user_id = $1", user_id)
            await conn.executemany(
                "INSERT INTO user_roles (user_id, role_code) VALUES ($1, $2)",
                [(user_id, r) for r in sorted(set(roles))],
            )
            changes.append(
                Change("user", str(user_id), "update", "roles", old_roles, sorted(set(roles)))
            )
        if unlock:
            await login_guard.forget_locks(conn, user_id)
        if is_active is False:
            await conn.execute("DELETE FROM sessions WHERE user_id = $1", user_id)
        await audit.record(conn, actor, changes)
        return await get_user(conn, user_id)


async def set_password(
    conn: asyncpg.Connection,
    actor: Actor,
    policy: PasswordPolicy,
    user_id: int,
    new_password: str,
    *,
    current_password: str | None = None,
    keep_session: bytes | None = None,
) -> None:
    """Set a password (checking the current one when given) and end the user's other sessions.

    An administrator's reset (no current password) ends every session of the user and
    lifts their lock-outs.
    """
    row = await conn.fetchrow("SELECT login, password_hash FROM users WHERE id = $1", user_id)
    if row is None:
        raise NotFound(f"user {user_id} does not exist")
    if current_password is not None and not await _verify(row["password_hash"], current_password):
        raise InvalidInput("current_password", "current password is wrong")
    policy.check(new_password, row["login"], field="new_password")
    new_hash = await hash_password(new_password)
    async with conn.transaction():
        await conn.execute(
            "UPDATE users SET password_hash = $2, password_changed_at = herald_now(), "
            "updated_at = herald_now() WHERE id = $1",
            user_id,
            new_hash,
        )
        await conn.execute(
            "DELETE FROM sessions WHERE user_id = $1 AND token_hash <> $2",
            user_id,
            keep_session or b"",
        )
        if current_password is None:
            await login_guard.forget_locks(conn, user_id)
        # The journal says that the password changed, never what it is.
        await audit.record(conn, actor, [Change("user", str(user_id), "update", "password")])


async def login(
    conn: asyncpg.Connection,
    policy: LoginPolicy,
    *,
    login_name: str,
    password: str,
    ttl: dt.timedelta,
    request_id: str | None,
    client_ip: str | None = None,
    user_agent: str | None = None,
    device_token: str | None = None,
) -> tuple[str, Principal, str]:
    """Check credentials and open a session; return its bearer token, the principal and the
    device token to keep (the same as given when it was one already).

    Throttled by ``crm.login_guard``: TooManyAttempts for an address that failed too often,
    AccountLocked for a locked account (or device). Every outcome is journalled: success, a
    wrong password, a lock-out; a lock-out ends the user's open sessions.
    """
    row = await conn.fetchrow(
        "SELECT id, login, password_hash, is_active FROM users WHERE lower(login) = lower($1)",
        login_name,
    )
    device = login_guard.device_hash(device_token)
    known = row is not None and await login_guard.is_known_device(conn, policy, device, row["id"])
    if not known:
        await login_guard.take_address_attempt(conn, policy, client_ip)
    if row is None:
        await _verify(_Hashing.dummy_hash, password)
        raise AuthenticationFailed("login or password is wrong")
    actor = Actor(login=row["login"], id=row["id"], request_id=request_id)
    entity = str(row["id"])
    claim = await login_guard.take_attempt(conn, policy, row["id"], device if known else None)
    if not await _verify(row["password_hash"], password) or not row["is_active"]:
        prefix = "device_" if known else ""
        changes = [
            Change(
                "user",
                entity,
                "login_failed",
                f"{prefix}failed_logins",
                claim.failures - 1,
                claim.failures,
            )
        ]
        async with conn.transaction():
            if claim.locks_until is not None:
                changes.append(
                    Change(
                        "user",
                        entity,
                        "lock",
                        f"{prefix}locked_until",
                        None,
                        claim.locks_until.isoformat(),
                    )
                )
                ended = await conn.fetchval(
                    "WITH d AS (DELETE FROM sessions WHERE user_id = $1 "
                    "RETURNING 1) SELECT count(*) FROM d",
                    row["id"],
                )
                if ended:
                    changes.append(Change("user", entity, "end_sessions", "sessions", ended, 0))
            await audit.record(conn, actor, changes)
        if claim.locks_until is not None:
            raise AccountLocked(
                "too many failed logins; the account is locked"
                + (" on this device" if known else " for devices not used before"),
                claim.locks_until.isoformat(),
            )
        raise AuthenticationFailed("login or password is wrong")
    if _Hashing.hasher.check_needs_rehash(row["password_hash"]):
        await conn.execute(
            "UPDATE users SET password_hash = $2 WHERE id = $1",
            row["id"],
            await hash_password(password),
        )
    token = secrets.token_urlsafe(32)
    if device is None or device_token is None:  # no device token, or not one of ours
        device_token = login_guard.new_device_token()
    async with conn.transaction():
        if not known:
            await login_guard.give_address_attempt_back(conn, client_ip)
        await login_guard.succeeded(conn, row["id"], login_guard.device_hash(device_token) or b"")
        await conn.execute(
            "INSERT INTO sessions (token_hash, user_id, expires_at, client_ip, user_agent) "
            "VALUES ($1, $2, herald_now() + $3::interval, $4::inet, $5)",
            _token_hash(token),
            row["id"],
            ttl,
            client_ip,
            (user_agent or "")[:500],
        )
        await audit.record(conn, actor, [Change("user", entity, "login")])
    principal = await resolve_session(conn, token, ttl)
    assert principal is not None  # just created in this connection
    return token, principal, device_token


async def resolve_session(
    conn: asyncpg.Connection, token: str, ttl: dt.timedelta
) -> Principal | None:
    """The principal of a live session token, or None; sliding expiry, at most one write a minute."""
    key = _token_hash(token)
    row = await conn.fetchrow(
        """
        SELECT u.id, u.login, u.full_name, s.last_seen_at < herald_now() - interval '1 minute' AS stale,
               array(SELECT role_code FROM user_roles WHERE user_id = u.id) AS roles,
               array(SELECT DISTINCT rp.permission_code FROM user_roles ur
                     JOIN role_permissions rp USING (role_code) WHERE ur.user_id = u.id) AS permissions
        FROM sessions s JOIN users u ON u.id = s.user_id
        WHERE s.token_hash = $1 AND s.expires_at > herald_now() AND u.is_active
        """,
        key,
    )
    if row is not None and row["stale"]:
        await conn.execute(
            "UPDATE sessions SET last_seen_at = herald_now(), expires_at = herald_now() + $2::interval "
            "WHERE token_hash = $1",
            key,
            ttl,
        )
    if row is None:
        return None
    return Principal(
        user_id=row["id"],
        login=row["login"],
        full_name=row["full_name"],
        roles=frozenset(row["roles"]),
        permissions=frozenset(row["permissions"]),
    )


async def logout(conn: asyncpg.Connection, actor: Actor, token: str) -> None:
    async with conn.transaction():
        await conn.execute("DELETE FROM sessions WHERE token_hash = $1", _token_hash(token))
        if actor.id is not None:
            await audit.record(conn, actor, [Change("user", str(actor.id), "logout")])


def session_key(token: str) -> bytes:
    """The stored form of a token (for keeping the current session on password change)."""
    return _token_hash(token)


async def purge_expired_sessions(pool: asyncpg.Pool) -> int:
    """Delete sessions past their expiry; returns how many (a scheduler duty)."""
    result = await pool.execute("DELETE FROM sessions WHERE expires_at < herald_now()")
    return int(result.split()[-1])
