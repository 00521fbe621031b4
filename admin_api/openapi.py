"""The OpenAPI 3.1 document, generated from the endpoint declarations and their msgspec types."""

from __future__ import annotations

import re
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

import msgspec
from aiohttp import web

from admin_api.inputs import path_param_type
from admin_api.problems import Problem
from admin_api.routing import (
    AUTHENTICATED,
    PROVIDER,
    PUBLIC,
    Endpoint,
    EndpointTable,
    endpoint_of,
)

endpoints = EndpointTable("system")
OPENAPI = web.AppKey("openapi", dict)

_PATH_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")
_PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


def _responses(ep: Endpoint, schema: dict[str, Any] | None) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": HTTPStatus(ep.status).phrase}
    if ep.status != 204 and schema is not None:
        ok["content"] = {ep.media_type: {"schema": schema}}
    responses: dict[str, Any] = {str(ep.status): ok}
    errors = set(ep.errors)
    if ep.body is not None or ep.query is not None or _PATH_PARAM.search(ep.path):
        errors.add(400)
    if ep.body is not None:
        errors.add(415)
    if ep.permission != PUBLIC:
        errors.add(401)
    if ep.permission not in (PUBLIC, AUTHENTICATED, PROVIDER):
        errors.add(403)
    errors.add(500)
    for status in sorted(errors):
        responses[str(status)] = {"description": HTTPStatus(status).phrase, "content": _PROBLEM}
    return responses


def build_openapi(declared: Iterable[Endpoint], *, title: str, version: str) -> dict[str, Any]:
    """The whole document; every schema comes from msgspec, none is written by hand."""
    eps = sorted(declared, key=lambda e: (e.path, e.method))
    types: list[Any] = [Problem]
    for ep in eps:
        types.extend(t for t in (ep.body, ep.query, ep.response) if t is not None)
    schemas, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    schema_of = {id(t): s for t, s in zip(types, schemas, strict=True)}

    paths: dict[str, dict[str, Any]] = {}
    for ep in eps:
        op: dict[str, Any] = {
            "operationId": f"{ep.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', ep.path.lower()).strip('_')}",
            "summary": ep.summary,
            "tags": list(ep.tags),
            "x-permission": ep.permission,
            "security": (
                []
                if ep.permission == PUBLIC
                else [{"provider_token": []}]
                if ep.permission == PROVIDER
                else [{"bearer": []}, {"session_cookie": []}]
            ),
            "responses": _responses(ep, schema_of.get(id(ep.response))),
        }
        params = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": msgspec.json.schema(path_param_type(name)),
            }
            for name in _PATH_PARAM.findall(ep.path)
        ]
        if ep.query is not None:
            query_schema = components[ep.query.__name__]
            required = set(query_schema.get("required", []))
            params += [
                {"name": name, "in": "query", "required": name in required, "schema": prop}
                # A parameter kept for old clients says so where they look (admin_api.paging).
                | ({"deprecated": True} if prop.get("deprecated") else {})
                for name, prop in query_schema["properties"].items()
            ]
        if params:
            op["parameters"] = params
        if ep.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema_of[id(ep.body)]}},
            }
        path = _PATH_PARAM.sub(r"{\1}", ep.path)
        paths.setdefault(path, {})[ep.method.lower()] = op

    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "Herald admin, CRM and event API. Errors are RFC 9457 problem "
            "documents; x-permission names the permission each operation "
            "requires.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "token from POST /api/v1/auth/login",
                },
                "session_cookie": {"type": "apiKey", "in": "cookie", "name": "herald_session"},
                "provider_token": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "HERALD_PROVIDER_API_TOKEN, for receipt callbacks",
                },
            },
        },
    }


def app_endpoints(app: web.Application) -> list[Endpoint]:
    """The declarations of every route registered on ``app``."""
    found = []
    for route in app.router.routes():
        declared = endpoint_of(route.handler)
        if declared is not None and route.method != "HEAD":
            found.append(declared)
    return found


@endpoints.get("/api/v1/openapi.json", permission=PUBLIC, response=dict)
async def openapi_document(request: web.Request) -> web.Response:
    """This API's OpenAPI 3.1 document."""
    return web.json_response(request.app[OPENAPI])
