"""The landing page: ``/`` opens the web UI (its login page when not logged in)."""

from __future__ import annotations

from aiohttp import web

from admin_api.routing import PUBLIC, EndpointTable

endpoints = EndpointTable("system")


@endpoints.get("/", permission=PUBLIC, response=str, media_type="text/html")
async def home(request: web.Request) -> web.Response:
    """Redirect to the web UI; the API's document is at /api/v1/openapi.json."""
    raise web.HTTPSeeOther("/ui/")
