"""The admin API application: one factory, resources opened and closed in cleanup contexts."""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator
from typing import Any

import prometheus_client
import redis.asyncio as aioredis
from aiohttp import web

from admin_api import exporting, inputs, observability, openapi
from admin_api.observability import (
    METRICS_HELPER,
    HttpMetrics,
    request_context_middleware,
)
from admin_api.problems import problem_middleware
from admin_api.routing import Endpoint, EndpointTable, endpoint_of
from admin_api.security import security_middleware
from admin_api.typedefs import AMQP, DB, METRICS, REDIS, SETTINGS
from admin_api.ui.setup import UI_TABLES, setup_ui, ui_guard
from admin_api.views import (
    audit,
    auth,
    campaigns,
    case_messages,
    case_routing,
    case_rules,
    case_sla,
    cases,
    client_activity,
    clients,
    contacts,
    cti,
    events,
    exports,
    health,
    home,
    rbac,
    reports,
    rules_alerts,
    rules_consents,
    rules_limits,
    rules_stop_lists,
    search,
    segments,
    supervisor,
    templates,
    users,
)
from crm.activity import ChannelEvent, CxEvent
from crm.cases.channels import TelegramUpdate, ViberCallback
from crm.cti import CallEvent
from crm.users import configure_hashing
from dispatcher.realtime.intake import EventIn
from dispatcher.templating.templates import TemplateEngine
from dispatcher.topology import declare_topology
from herald import __version__, clock
from herald.amqp import AmqpLink
from herald.db import create_pool
from herald.settings import Settings

ENDPOINT_TABLES: tuple[EndpointTable, ...] = (
    home.endpoints,
    health.endpoints,
    observability.endpoints,
    openapi.endpoints,
    auth.endpoints,
    users.endpoints,
    rbac.endpoints,
    audit.endpoints,
    templates.endpoints,
    campaigns.endpoints,
    rules_limits.endpoints,
    rules_alerts.endpoints,
    rules_stop_lists.endpoints,
    rules_consents.endpoints,
    clients.endpoints,
    contacts.endpoints,
    client_activity.endpoints,
    search.endpoints,
    cti.endpoints,
    segments.endpoints,
    events.endpoints,
    cases.endpoints,
    case_messages.endpoints,
    case_routing.endpoints,
    case_rules.endpoints,
    case_sla.endpoints,
    supervisor.endpoints,
    exports.endpoints,
    reports.endpoints,
    *UI_TABLES,
)


# Types a view decodes itself (items of a batch, webhook bodies, CTI's form or query): their
# integers need bounds as much as those of declared bodies.
DECODED_IN_VIEWS: tuple[Any, ...] = (
    ChannelEvent,
    CxEvent,
    EventIn,
    CallEvent,
    ViberCallback,
    TelegramUpdate,
)
_PATH_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")


class UndeclaredRoute(RuntimeError):
    """A route was added without declaring the permission it needs."""


async def _postgres(app: web.Application) -> AsyncIterator[None]:
    app[DB] = await create_pool(app[SETTINGS])
    yield
    await app[DB].close()


async def _redis(app: web.Application) -> AsyncIterator[None]:
    app[REDIS] = aioredis.Redis.from_url(app[SETTINGS].redis_url)
    yield
    await app[REDIS].aclose()


async def _rabbitmq(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # The API publishes realtime references itself: the queues must exist before the
    # first publish, whether or not a worker has started yet.
    link = AmqpLink(settings, on_connect=lambda channel: declare_topology(channel, settings))
    link.start()
    # Start with the broker when it is there; without it the API still serves and
    # /readyz says RabbitMQ is down until the link connects.
    await link.wait_connected(timeout=5)
    app[AMQP] = link
    yield
    await link.close()


def check_routes_declared(app: web.Application) -> None:
    """Refuse to start when any route has no declared permission."""
    missing = [
        f"{r.method} {r.resource.canonical if r.resource else '?'}"
        for r in app.router.routes()
        if endpoint_of(r.handler) is None
    ]
    if missing:
        raise UndeclaredRoute("routes without a declared permission: " + ", ".join(missing))


# The declarations are the code's, the same for every app a process builds (the tests build
# hundreds): each is checked, and the OpenAPI document made, once per process.
@functools.cache
def _undeclared_inputs(declared: Endpoint) -> tuple[str, ...]:
    """Path parameters of ``declared`` without a type; raises on an unbounded integer."""
    undeclared = []
    for name in _PATH_PARAM.findall(declared.path):
        try:
            inputs.path_param_type(name)
        except KeyError:
            undeclared.append(f"{name} in {declared.method} {declared.path}")
    inputs.check_bounded(t for t in (declared.body, declared.query) if t is not None)
    return tuple(undeclared)


@functools.cache
def _check_decoded_in_views() -> None:
    inputs.check_bounded(DECODED_IN_VIEWS)


@functools.lru_cache(maxsize=4)
def _openapi_document(declared: tuple[Endpoint, ...]) -> dict[str, Any]:
    return openapi.build_openapi(declared, title="Herald API", version=__version__)


def check_inputs_declared(app: web.Application) -> None:
    """Refuse to start when a path parameter has no declared type or an input integer no bounds."""
    undeclared: set[str] = set()
    for route in app.router.routes():
        declared = endpoint_of(route.handler)
        if declared is not None:
            undeclared.update(_undeclared_inputs(declared))
    if undeclared:
        raise UndeclaredRoute(
            "path parameters without a type in admin_api.inputs.PATH_PARAMS: "
            + ", ".join(sorted(undeclared))
        )
    _check_decoded_in_views()


def init_app(settings: Settings) -> web.Application:
    """Build the admin API for ``settings``; connections open when the app starts."""
    app = web.Application(
        middlewares=[request_context_middleware, problem_middleware, ui_guard, security_middleware],
        client_max_size=8 * 1024 * 1024,
    )
    clock.configure(settings)
    configure_hashing(
        time_cost=settings.password_hash_time_cost, memory_kib=settings.password_hash_memory_kib
    )
    app[SETTINGS] = settings
    app[templates.ENGINE] = TemplateEngine()
    setup_ui(app)
    registry = prometheus_client.CollectorRegistry()
    app[METRICS] = registry
    app[METRICS_HELPER] = HttpMetrics(registry)
    for table in ENDPOINT_TABLES:
        table.add_to(app)
    check_routes_declared(app)
    check_inputs_declared(app)
    app[openapi.OPENAPI] = _openapi_document(tuple(openapi.app_endpoints(app)))
    app.cleanup_ctx.extend(
        [
            _postgres,
            exporting.runner_context,
            clients.billing_context,
            supervisor.live_context,
            _redis,
            _rabbitmq,
        ]
    )
    return app
