"""Request ids, one structured log line per request, and Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any

import prometheus_client
from aiohttp import web

from admin_api.routing import PUBLIC, EndpointTable
from admin_api.typedefs import METRICS, REQUEST_ID
from herald.logs import request_id_var

log = logging.getLogger("herald.api.access")
CLIENT_CLOSED_REQUEST = 499
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

endpoints = EndpointTable("system")


class HttpMetrics:
    """The admin API's own metrics, in a registry of its own (one per app)."""

    def __init__(self, registry: prometheus_client.CollectorRegistry) -> None:
        self.requests = prometheus_client.Counter(
            "herald_http_requests_total",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = prometheus_client.Histogram(
            "herald_http_request_duration_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )


METRICS_HELPER = web.AppKey("http_metrics", HttpMetrics)


def _route_label(request: web.Request) -> str:
    # The route template, never the raw path: ids in paths would explode cardinality.
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def request_context_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Give the request an id (the caller's X-Request-ID when sane), log and measure it."""
    incoming = request.headers.get("X-Request-ID", "")
    request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    token = request_id_var.set(request_id)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers["X-Request-ID"] = request_id
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        # A server that cancels handlers when the client leaves (aiohttp's
        # handler_cancellation) cancels it here: the client closed the request (nginx's
        # 499), not a server error.
        transport = request.transport
        if transport is None or transport.is_closing():
            status = CLIENT_CLOSED_REQUEST
        raise
    finally:
        elapsed = time.perf_counter() - started
        route = _route_label(request)
        metrics = request.app[METRICS_HELPER]
        metrics.requests.labels(request.method, route, str(status)).inc()
        metrics.latency.labels(request.method, route).observe(elapsed)
        log.info(
            "%s %s %s",
            request.method,
            request.path,
            status,
            extra={
                "method": request.method,
                "path": request.path,
                "route": route,
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
                "remote": request.remote,
            },
        )
        request_id_var.reset(token)


@endpoints.get("/metrics", permission=PUBLIC, response=str, media_type="text/plain")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics of this process (scrape target)."""
    body = prometheus_client.generate_latest(request.app[METRICS])
    return web.Response(body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})
