"""The simulators' HTTP server: one aiohttp app that outside-provider simulators mount into."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from herald.settings import Settings
from providers.sim.billing import mount_billing
from providers.sim.gateway import mount_sms, mount_viber
from providers.sim.smtp_sink import mount_email, smtp_sink_context

# Each simulator is a function adding its routes under its own prefix (/sms, /viber,
# /billing ...). The messaging-engine and Client 360 issues add theirs here.
Mount = Callable[[web.Application, Settings], None]
SIMULATORS: dict[str, Mount] = {
    "sms": mount_sms,
    "viber": mount_viber,
    "email": mount_email,
    "billing": mount_billing,
}


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "simulators": sorted(SIMULATORS)})


def init_simulators_app(settings: Settings, *, smtp_sink: bool = False) -> web.Application:
    """The app serving every registered simulator; with ``smtp_sink``, also the SMTP sink on settings.smtp_port."""
    # Batches of 1000 Viber messages with buttons exceed aiohttp's 1 MiB default.
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_get("/healthz", _healthz)
    for mount in SIMULATORS.values():
        mount(app, settings)
    if smtp_sink:
        app.cleanup_ctx.append(smtp_sink_context(settings))
    return app
