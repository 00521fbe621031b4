"""The RBAC matrix: every route of the route tables, asked by every role, answers as the
permission data in the database says.

- without a session: 401 (an API route: the ``authentication-required`` problem; a page: a
  303 to the login page that comes back to it);
- pages are asked as a browser asks (the session cookie and the CSRF token), API routes
  with a bearer token;
- with a session of a role lacking the route's permission: 403;
- with a session of a role holding it (or any session, for ``authenticated`` routes): anything
  but 401 or 403 (a path with parameters gets seeded ids for reading, ids that do not exist
  for changing; a 400, 404 or 409 past the door counts as authorised);
- provider and producer routes refuse every user session (401) and take their own key;
- public routes answer without a session.

The routes come from ``admin_api.app.ENDPOINT_TABLES`` (API and UI pages alike) and the roles
and their permissions from the tables ``roles`` and ``role_permissions``: a route added to any
table, or a role added by a migration, is in the matrix without touching this file. One app,
one database, every request concurrently, each with a session of its own (a logout ends only
its own).
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from urllib.parse import quote

import aiohttp
import asyncpg
import msgspec
import pytest

from admin_api.app import ENDPOINT_TABLES, init_app
from admin_api.routing import AUTHENTICATED, PRODUCER, PROVIDER, PUBLIC, Endpoint
from admin_api.security import SESSION_COOKIE
from admin_api.ui.guard import LOGIN_PATH, is_page
from admin_api.ui.rendering import csrf_token
from crm.users import session_key
from dispatcher.realtime import producers
from herald.audit import SYSTEM
from herald.cli.seed import seed_crm
from herald.settings import Settings

NO_ROLE = "(no role)"
ANONYMOUS = "(anonymous)"
MISSING_ID = "987654321"
MISSING_TEXT = "no-such-thing"
_PARAM = re.compile(r"\{(\w+)(?::([^}]*))?\}")
# Values tried, after the default, for a parameter whose route declares a pattern (a region
# code, a report's name...): the first that matches goes in the path. A route whose pattern
# none matches fails the test, so that it cannot escape the matrix.
PATTERN_SAMPLES = ("UA-99",)
SECURITY_CODES = {"authentication-required", "session-invalid", "permission-denied"}
PROVIDER_TOKEN = "rbac-provider-token"
CONCURRENCY = 16

pytestmark = pytest.mark.timeout(300)


def declared_endpoints() -> list[Endpoint]:
    return [declared for table in ENDPOINT_TABLES for declared, _ in table.endpoints]


class Served(msgspec.Struct):
    base_url: str
    sessions: dict[str, list[str]]  # role -> fresh session tokens, one per request
    permissions: dict[str, frozenset[str]]  # role -> its permissions, from the database
    known: frozenset[str]  # every permission code in the database
    ids: dict[str, str]  # path parameter -> a seeded value, for reading
    producer_key: str


async def _seeded_ids(conn: asyncpg.Connection) -> dict[str, str]:
    """Real values for the path parameters of reading routes, from the seeded database."""
    queries = {
        "client_id": "SELECT min(id) FROM clients",
        "account_id": "SELECT min(id) FROM accounts",
        "or_number": "SELECT min(or_number) FROM accounts",
        "contact_id": "SELECT min(id) FROM contacts",
        "meter_id": "SELECT min(id) FROM meters",
        "user_id": "SELECT min(id) FROM users",
        "role": "SELECT min(code) FROM roles",
        "category_id": "SELECT min(id) FROM case_categories",
        "calendar_id": "SELECT min(id) FROM business_calendars",
    }
    ids = {}
    for name, sql in queries.items():
        try:
            value = await conn.fetchval(sql)
        except asyncpg.UndefinedTableError:
            value = None
        if value is not None:
            ids[name] = str(value)
    ids.update(entity_type="role", entity_id="admin", channel="sms", name="htmx.min.js")
    return ids


@pytest.fixture
async def served(
    settings: Settings, admin_conn: asyncpg.Connection, aiohttp_server
) -> AsyncIterator[Served]:
    await seed_crm(settings, clients=20, seed=3, processes=1, progress=False)
    roles = [r["code"] for r in await admin_conn.fetch("SELECT code FROM roles ORDER BY code")]
    granted = await admin_conn.fetch("SELECT role_code, permission_code FROM role_permissions")
    permissions = {
        role: frozenset(g["permission_code"] for g in granted if g["role_code"] == role)
        for role in roles
    }
    permissions[NO_ROLE] = frozenset()
    known = frozenset(r["code"] for r in await admin_conn.fetch("SELECT code FROM permissions"))
    # One user per role (and one with none), each holding that role alone.
    users: dict[str, int] = {}
    for role in permissions:
        login = "rbac." + ("none" if role == NO_ROLE else role)
        users[role] = await admin_conn.fetchval(
            "INSERT INTO users (login, full_name, password_hash) VALUES ($1, $1, '!') RETURNING id",
            login,
        )
        if role != NO_ROLE:
            await admin_conn.execute("INSERT INTO user_roles VALUES ($1, $2)", users[role], role)
    # A session for every request: a route that ends its session ends only its own.
    sessions = {role: [secrets.token_urlsafe(24) for _ in declared_endpoints()] for role in users}
    await admin_conn.executemany(
        "INSERT INTO sessions (token_hash, user_id, expires_at) "
        "VALUES ($1, $2, herald_now() + interval '1 hour')",
        [
            (
                session_key(t),
                users[role],
            )
            for role, tokens in sessions.items()
            for t in tokens
        ],
    )
    created = await producers.create(
        admin_conn,
        SYSTEM,
        producers.ProducerSpec(name="rbac matrix", event_types=["billing.payment_received"]),
    )
    app = init_app(msgspec.structs.replace(settings, provider_api_token=PROVIDER_TOKEN))
    server = await aiohttp_server(app, host="127.0.0.1", shutdown_timeout=1.0)
    yield Served(
        str(server.make_url("")).rstrip("/"),
        sessions,
        permissions,
        known,
        await _seeded_ids(admin_conn),
        created.api_key,
    )


def _path(declared: Endpoint, ids: dict[str, str]) -> str:
    """The route's path with its parameters filled: seeded ids for reading, missing ones
    for changing (an authorised change then stops at 400 or 404 and changes nothing)."""
    reading = declared.method == "GET"

    def value(match: re.Match[str]) -> str:
        name, pattern = match.group(1), match.group(2)
        if reading and name in ids:
            return quote(ids[name], safe="")
        default = MISSING_ID if name.endswith("_id") or name == "version" else MISSING_TEXT
        if pattern is None:
            return default
        # the pattern's own words (alternatives such as (cases|team)) are candidates too
        candidates = (default, *PATTERN_SAMPLES, *re.findall(r"[A-Za-z_][\w-]*", pattern))
        found = next((c for c in candidates if re.fullmatch(pattern, c)), None)
        assert found, f"add a value matching {pattern!r} to PATTERN_SAMPLES ({declared.path})"
        return found

    return _PARAM.sub(value, declared.path)


class Answer(msgspec.Struct):
    status: int
    location: str = ""
    code: str = ""  # the problem's type, for JSON problems


async def _ask(
    http: aiohttp.ClientSession, base: str, declared: Endpoint, path: str, token: str | None
) -> Answer:
    headers = {"Origin": base}
    if token is not None and is_page(declared):
        # A page as the browser asks for it: the session cookie and the form's CSRF token.
        headers.update(Cookie=f"{SESSION_COOKIE}={token}", **{"X-CSRF-Token": csrf_token(token)})
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with http.request(
        declared.method, base + path, headers=headers, allow_redirects=False
    ) as response:
        answer = Answer(response.status, response.headers.get("Location", ""))
        if response.content_type == "text/event-stream":
            response.close()  # a live stream: its status line is the answer
        elif response.content_type == "application/problem+json":
            answer.code = (await response.json()).get("type", "").rsplit("/", 1)[-1]
        else:
            await response.read()
        return answer


def _judge(declared: Endpoint, path: str, who: str, allowed: bool, answer: Answer) -> str | None:
    """What is wrong with ``answer`` (None: it matches the permission data)."""
    page = is_page(declared)
    if who == ANONYMOUS and declared.permission != PUBLIC:
        if page:
            wanted = f"{LOGIN_PATH}?next={quote(path)}"
            if answer.status == 303 and answer.location == wanted:
                return None
            return f"wanted a 303 to {wanted}"
        return None if answer.status == 401 else "wanted 401"
    if not allowed:
        if declared.permission in (PROVIDER, PRODUCER):
            return None if answer.status == 401 else "wanted 401 (a user session is no key)"
        if answer.status != 403:
            return "wanted 403"
        if not page and answer.code != "permission-denied":
            return "wanted the permission-denied problem"
        return None
    if page and answer.status == 303 and answer.location.startswith(f"{LOGIN_PATH}?next="):
        return "sent to the login page"
    if declared.permission == PUBLIC and answer.status == 401:
        return None  # the route's own refusal (wrong credentials, a webhook's bad signature)
    if answer.status in (401, 403) and (page or answer.code in SECURITY_CODES or not answer.code):
        return "wanted to pass the door"
    return None


async def test_every_route_answers_every_role_as_the_permission_data_says(served: Served) -> None:
    endpoints = declared_endpoints()
    assert len({(e.method, e.path) for e in endpoints}) == len(endpoints)
    calls: list[tuple[Endpoint, str, str, bool, str | None]] = []
    for n, declared in enumerate(endpoints):
        path = _path(declared, served.ids)
        calls.append((declared, path, ANONYMOUS, declared.permission == PUBLIC, None))
        for role, held in served.permissions.items():
            allowed = declared.permission in held or declared.permission in (
                PUBLIC,
                AUTHENTICATED,
            )
            calls.append((declared, path, role, allowed, served.sessions[role][n]))
        if declared.permission == PRODUCER:
            calls.append((declared, path, "producer key", True, served.producer_key))
        if declared.permission == PROVIDER:
            calls.append((declared, path, "provider token", True, PROVIDER_TOKEN))

    limit = asyncio.Semaphore(CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def one(call: tuple[Endpoint, str, str, bool, str | None]) -> str | None:
            declared, path, who, allowed, token = call
            async with limit:
                answer = await _ask(http, served.base_url, declared, path, token)
            wrong = _judge(declared, path, who, allowed, answer)
            if wrong is None:
                return None
            return (
                f"{declared.method} {path} [{declared.permission}] as {who}: got "
                f"{answer.status} {answer.code or answer.location}; {wrong}"
            )

        results = await asyncio.gather(*(one(c) for c in calls))
    wrong = [r for r in results if r is not None]
    assert not wrong, f"{len(wrong)} of {len(calls)} answers differ:\n" + "\n".join(wrong)
    # Every kind of caller was asked, and both answers occurred for user routes.
    assert len(served.permissions) >= 8


async def test_every_permission_a_route_needs_exists_and_some_role_holds_it(
    served: Served,
) -> None:
    needed = {
        e.permission
        for e in declared_endpoints()
        if e.permission not in (PUBLIC, AUTHENTICATED, PROVIDER, PRODUCER)
    }
    assert needed - served.known == set(), "routes need permissions the database does not know"
    held = set().union(*served.permissions.values())
    # A permission no role holds is a route nobody can use until an admin grants it.
    assert needed - held == set()


def test_the_app_serves_exactly_the_routes_of_the_tables(settings: Settings) -> None:
    app = init_app(settings)
    served = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.method != "HEAD"
    }
    tabled = {(e.method, re.sub(r"\{(\w+):[^}]*\}", r"{\1}", e.path)) for e in declared_endpoints()}
    assert served == tabled
