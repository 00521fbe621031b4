"""Dashboards (issue 16): grids of widgets a user builds without a developer, each widget
a report with its filters and period. A dashboard is personal (``owner_id``) or assigned
by an administrator to a role as its start page (``role_code``, one per role).

The widgets are kept in grid order in one jsonb array (a dashboard has tens of them, and
is saved whole); the page adds, removes, resizes and reorders them through this store.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Annotated, Literal

import asyncpg
import msgspec

from herald.errors import InvalidInput, NotFound

Kind = Literal["number", "timeseries", "bar", "table", "funnel"]
Report = Literal["my", "cases", "team", "backlog", "messaging"]
MAX_WIDGETS = 40


class Widget(msgspec.Struct, forbid_unknown_fields=True):
    id: int
    kind: Kind
    report: Report
    metric: Annotated[str, msgspec.Meta(max_length=64)] = "created"
    # The report's pickers as a query string's fields (period, from, to, group_by, filters).
    params: dict[
        Annotated[str, msgspec.Meta(max_length=32)], Annotated[str, msgspec.Meta(max_length=64)]
    ] = {}
    title: Annotated[str, msgspec.Meta(max_length=120)] = ""
    # Width in grid columns (of 4) and height in rows (of 1 or 2).
    w: Annotated[int, msgspec.Meta(ge=1, le=4)] = 2
    h: Annotated[int, msgspec.Meta(ge=1, le=2)] = 1


class Dashboard(msgspec.Struct):
    id: int
    name: str
    owner_id: int | None
    role_code: str | None
    widgets: list[Widget]
    updated_at: dt.datetime


_decode_widgets = msgspec.json.Decoder(list[Widget])
_COLUMNS = "id, name, owner_id, role_code, widgets::text AS widgets, updated_at"


def _dashboard(row: asyncpg.Record) -> Dashboard:
    values = dict(row)
    values["widgets"] = _decode_widgets.decode(values["widgets"])
    return Dashboard(**values)


async def list_for(conn: asyncpg.Connection, user_id: int, roles: Iterable[str]) -> list[Dashboard]:
    """The user's own dashboards and those assigned to their roles."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM report_dashboards WHERE owner_id = $1 OR role_code = ANY($2) "
        "ORDER BY role_code NULLS LAST, name, id",
        user_id,
        list(roles),
    )
    return [_dashboard(r) for r in rows]


async def start_page(conn: asyncpg.Connection, roles: Iterable[str]) -> int | None:
    """The dashboard assigned to one of these roles (the first role by name), if any."""
    found: int | None = await conn.fetchval(
        "SELECT id FROM report_dashboards WHERE role_code = ANY($1) ORDER BY role_code LIMIT 1",
        list(roles),
    )
    return found


async def get(conn: asyncpg.Connection, dashboard_id: int) -> Dashboard:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM report_dashboards WHERE id = $1", dashboard_id
    )
    if row is None:
        raise NotFound(f"dashboard {dashboard_id} not found")
    return _dashboard(row)


async def create(
    conn: asyncpg.Connection, owner_id: int, name: str, widgets: list[Widget]
) -> Dashboard:
    if not name.strip():
        raise InvalidInput("name", "a dashboard needs a name")
    row = await conn.fetchrow(
        f"INSERT INTO report_dashboards (name, owner_id, widgets) VALUES ($1, $2, $3) "
        f"RETURNING {_COLUMNS}",
        name.strip()[:200],
        owner_id,
        msgspec.to_builtins(widgets),
    )
    return _dashboard(row)


async def save_widgets(
    conn: asyncpg.Connection, dashboard_id: int, widgets: list[Widget]
) -> Dashboard:
    if len(widgets) > MAX_WIDGETS:
        raise InvalidInput("kind", f"a dashboard holds at most {MAX_WIDGETS} widgets")
    row = await conn.fetchrow(
        f"UPDATE report_dashboards SET widgets = $2, updated_at = herald_now() "
        f"WHERE id = $1 RETURNING {_COLUMNS}",
        dashboard_id,
        msgspec.to_builtins(widgets),
    )
    if row is None:
        raise NotFound(f"dashboard {dashboard_id} not found")
    return _dashboard(row)


async def assign_to_role(conn: asyncpg.Connection, dashboard_id: int, role_code: str) -> Dashboard:
    """A copy of the dashboard becomes the role's start page (replacing the role's one)."""
    source = await get(conn, dashboard_id)
    if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM roles WHERE code = $1)", role_code):
        raise InvalidInput("role_code", f"unknown role {role_code!r}")
    row = await conn.fetchrow(
        f"""
        INSERT INTO report_dashboards (name, role_code, widgets) VALUES ($1, $2, $3)
        ON CONFLICT (role_code) WHERE role_code IS NOT NULL
        DO UPDATE SET name = excluded.name, widgets = excluded.widgets, updated_at = herald_now()
        RETURNING {_COLUMNS}
        """,
        source.name,
        role_code,
        msgspec.to_builtins(source.widgets),
    )
    return _dashboard(row)


async def delete(conn: asyncpg.Connection, dashboard_id: int) -> None:
    await conn.execute("DELETE FROM report_dashboards WHERE id = $1", dashboard_id)
