"""The OpenAPI document as a hostile user would read it: schemathesis sends valid and
invalid data to every operation, with a session of each role (the demo user of every role,
the administrator last; ``operator_cc`` and the administrator send every case, the other
roles the first of each operation), against the app served on 127.0.0.1. No request may
get a 5xx, and every error of an API operation is an RFC 9457 problem.

Bounded for CI (a few cases per operation and mode, derandomized: the same cases every
run). ``FUZZ_VALID=50 FUZZ_INVALID=50`` sends more of them, for a longer hunt by hand;
``FUZZ_ONLY=<regular expression>`` keeps the operations ("METHOD /path") it matches.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import msgspec
import pytest
from fuzz_helpers import (
    APART,
    FuzzReport,
    generate,
    load_schema,
    name_of,
    operations,
    page_operations,
    send,
    stream_paths,
)

from admin_api.app import init_app
from admin_api.openapi import OPENAPI
from crm.users import session_key
from herald.cli.demo import DEMO_USERS
from herald.cli.seed import seed_crm
from herald.settings import Settings
from providers.sim.server import init_simulators_app

VALID = int(os.environ.get("FUZZ_VALID", "2"))
INVALID = int(os.environ.get("FUZZ_INVALID", "1"))
ONLY = re.compile(os.environ.get("FUZZ_ONLY", ""))  # e.g. "^(PATCH|POST) /api/v1/users"
# Every role; the administrator last: its cases may change the users and roles.
ROLES = (*sorted({d.role for d in DEMO_USERS} - {"admin"}), "admin")
# These send every case; the other roles the first case of each operation (most of theirs
# end at the door with a 403: one each shows that, and keeps the run short).
EVERY_CASE = frozenset({"operator_cc", "admin"})

pytestmark = pytest.mark.timeout(600)


class Served(msgspec.Struct):
    base_url: str
    document: dict[str, Any]


@pytest.fixture
async def served(
    settings: Settings,
    demo_users: dict[str, str],
    aiohttp_server,
) -> AsyncIterator[Served]:
    """Herald with a few hundred seeded clients and the billing simulator, on loopback."""
    await seed_crm(settings, clients=200, seed=7, processes=1, progress=False)
    token = "fuzz-provider-token"
    sim = await aiohttp_server(
        init_simulators_app(msgspec.structs.replace(settings, provider_api_token=token)),
        host="127.0.0.1",
    )
    configured = msgspec.structs.replace(
        settings, provider_api_token=token, billing_url=str(sim.make_url("/billing"))
    )
    app = init_app(configured)
    # Live streams (SSE) still open at the end need not hold the shutdown up for long.
    server = await aiohttp_server(app, host="127.0.0.1", shutdown_timeout=1.0)
    yield Served(str(server.make_url("")).rstrip("/"), app[OPENAPI])


async def _session(conn: asyncpg.Connection, role: str) -> str:
    """A fresh session of the demo user of ``role``, made directly (no password hashing)."""
    token = secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO sessions (token_hash, user_id, expires_at) SELECT $1, u.id, "
        "herald_now() + interval '1 hour' FROM users u JOIN user_roles r ON r.user_id = u.id "
        "WHERE r.role_code = $2 ORDER BY u.id LIMIT 1",
        session_key(token),
        role,
    )
    return token


async def test_no_operation_answers_a_5xx(served: Served, admin_conn: asyncpg.Connection) -> None:
    loop = asyncio.get_running_loop()
    schema = load_schema(served.document)
    report = FuzzReport()
    # Users, roles and their permissions as they were, put back after each case kept apart.
    snapshot = {
        t: await admin_conn.fetch(f"SELECT * FROM {t}")
        for t in ("users", "user_roles", "role_permissions")
    }

    async def restore() -> None:
        async with admin_conn.transaction():
            await admin_conn.execute("DELETE FROM role_permissions")
            await admin_conn.executemany(
                "INSERT INTO role_permissions VALUES ($1, $2)",
                [tuple(r) for r in snapshot["role_permissions"]],
            )
            await admin_conn.execute("DELETE FROM user_roles")
            await admin_conn.executemany(
                "INSERT INTO user_roles VALUES ($1, $2)", [tuple(r) for r in snapshot["user_roles"]]
            )
            await admin_conn.executemany(
                "UPDATE users SET is_active = $2, password_hash = $3, locked_until = NULL, "
                "failed_logins = 0 WHERE id = $1",
                [(r["id"], r["is_active"], r["password_hash"]) for r in snapshot["users"]],
            )

    def on_loop(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def same_session(token: str) -> Callable[[], str]:
        return lambda: token

    def new_session(role: str) -> Callable[[], str]:
        return lambda: on_loop(_session(admin_conn, role))

    chosen = [op for op in operations(schema) if ONLY.search(name_of(op))]
    made = await asyncio.to_thread(generate, chosen, report, valid=VALID, invalid=INVALID)
    shared = [(op, cases) for op, cases in made if (op.method.upper(), op.path) not in APART]
    apart = [(op, cases) for op, cases in made if (op.method.upper(), op.path) in APART]
    streams = stream_paths(served.document)
    pages = page_operations(served.document)
    assert {"/ui/live", "/api/v1/campaigns/{campaign_id}/stream"} <= streams
    for role in ROLES:
        token = await _session(admin_conn, role)
        await asyncio.to_thread(
            send,
            shared if role in EVERY_CASE else [(op, cases[:1]) for op, cases in shared],
            served.base_url,
            same_session(token),
            report,
            label=role,
            streams=streams,
            pages=pages,
        )
    for role in ROLES:
        await asyncio.to_thread(
            send,
            apart if role in EVERY_CASE else [(op, cases[:1]) for op, cases in apart],
            served.base_url,
            new_session(role),
            report,
            label=f"{role} apart",
            streams=streams,
            pages=pages,
            after_each=lambda: on_loop(restore()),
        )

    print(f"\nfuzz: {report.summary()}")
    every = {name_of(op) for op in chosen}
    for role in ROLES:
        called = report.operations.get(role, set()) | report.operations.get(f"{role} apart", set())
        assert called == every, (role, sorted(every - called))
    assert not report.failures, "\n".join(report.failures)
