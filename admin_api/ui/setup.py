"""Wiring the web UI into the admin API: its route tables, its middleware, its resources."""

from __future__ import annotations

from aiohttp import web

from admin_api.routing import EndpointTable
from admin_api.ui import (
    automation_pages,
    card_pages,
    case_pages,
    contact_pages,
    live,
    mass_edit_pages,
    message_pages,
    search_pages,
    session_pages,
    static_files,
    task_pages,
)
from admin_api.ui.guard import ui_guard
from admin_api.ui.rendering import RENDERER, Renderer
from admin_api.ui.static_files import STATIC, StaticFiles

UI_TABLES: tuple[EndpointTable, ...] = (
    static_files.endpoints,
    session_pages.endpoints,
    search_pages.endpoints,
    card_pages.endpoints,
    contact_pages.endpoints,
    message_pages.endpoints,
    case_pages.endpoints,
    mass_edit_pages.endpoints,
    live.endpoints,
    task_pages.endpoints,
    automation_pages.endpoints,
)

__all__ = ["UI_TABLES", "setup_ui", "ui_guard"]


def setup_ui(app: web.Application) -> None:
    """Read the static files and build the template environments, once per app."""
    app[STATIC] = StaticFiles()
    app[RENDERER] = Renderer(app[STATIC].url)
    app[live.STREAMS] = set()
    app.on_shutdown.append(live.end_streams)
