"""Wiring the web UI into the admin API: its route tables, its middleware, its resources."""

from __future__ import annotations

from aiohttp import web

from admin_api.routing import EndpointTable
from admin_api.ui import (
    admin_pages,
    audit_pages,
    automation_pages,
    campaign_live,
    campaign_pages,
    card_pages,
    case_pages,
    consent_pages,
    contact_pages,
    contact_rule_pages,
    dashboard_pages,
    export_pages,
    live,
    mass_edit_pages,
    message_pages,
    report_pages,
    search_pages,
    segment_pages,
    session_pages,
    static_files,
    supervisor_pages,
    task_pages,
    template_pages,
    trigger_pages,
)
from admin_api.ui.guard import ui_guard
from admin_api.ui.rendering import RENDERER, Renderer
from admin_api.ui.static_files import STATIC, StaticFiles

UI_TABLES: tuple[EndpointTable, ...] = (
    static_files.endpoints,
    session_pages.endpoints,
    search_pages.endpoints,
    segment_pages.endpoints,
    card_pages.endpoints,
    consent_pages.endpoints,
    contact_rule_pages.endpoints,
    contact_pages.endpoints,
    message_pages.endpoints,
    case_pages.endpoints,
    mass_edit_pages.endpoints,
    live.endpoints,
    task_pages.endpoints,
    export_pages.endpoints,
    supervisor_pages.endpoints,
    audit_pages.endpoints,
    admin_pages.endpoints,
    template_pages.endpoints,
    campaign_pages.endpoints,
    trigger_pages.endpoints,
    report_pages.endpoints,
    dashboard_pages.endpoints,
    automation_pages.endpoints,
)

__all__ = ["UI_TABLES", "setup_ui", "ui_guard"]


def setup_ui(app: web.Application) -> None:
    """Read the static files and build the template environments, once per app."""
    app[STATIC] = StaticFiles()
    app[RENDERER] = Renderer(app[STATIC].url)
    app[live.STREAMS] = set()
    app[supervisor_pages.BOARDS] = supervisor_pages.Boards()
    app.on_shutdown.append(live.end_streams)
    app[campaign_live.WATCH] = campaign_live.Watch(app)
    app.on_cleanup.append(campaign_live.close_watch)
