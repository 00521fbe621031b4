"""The simulators' HTTP server: one aiohttp app that outside-provider simulators mount into."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from herald.settings import Settings

# Each simulator is a function adding its routes under its own prefix (/sms, /viber,
# /billing ...). The messaging-engine and Client 360 issues add theirs here.
Mount = Callable[[web.Application, Settings], None]
SIMULATORS: dict[str, Mount] = {}


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "simulators": sorted(SIMULATORS)})


def init_simulators_app(settings: Settings) -> web.Application:
    """The app serving every registered simulator."""
    app = web.Application()
    app.router.add_get("/healthz", _healthz)
    for mount in SIMULATORS.values():
        mount(app, settings)
    return app
