"""The landing page: where things are, for a person who opens Herald in a browser."""

from __future__ import annotations

from aiohttp import web

from admin_api.routing import PUBLIC, EndpointTable

endpoints = EndpointTable("system")

_PAGE = """<!doctype html>
<html lang="uk"><head><meta charset="utf-8"><title>Herald</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:3rem auto;padding:0 1rem}
code{background:#f3f3f3;padding:.1rem .3rem}</style></head>
<body><h1>Herald</h1>
<p>CRM та платформа масових повідомлень для постачальників комунальних послуг.<br>
CRM core and customer-messaging engine for utilities.</p>
<ul>
<li><a href="/api/v1/openapi.json">API (OpenAPI 3.1)</a>: вхід — <code>POST /api/v1/auth/login</code></li>
<li><a href="/readyz">Стан сервісів / readiness</a> · <a href="/healthz">liveness</a> ·
<a href="/metrics">metrics</a></li>
</ul></body></html>
"""


@endpoints.get("/", permission=PUBLIC, response=str, media_type="text/html")
async def home(request: web.Request) -> web.Response:
    """Landing page with links to the API document and health endpoints."""
    return web.Response(text=_PAGE, content_type="text/html")
