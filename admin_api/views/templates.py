"""The template library: save (every save a new version), read versions, validate, variables."""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web

from admin_api.routing import EndpointTable, path_int
from admin_api.security import actor
from admin_api.typedefs import DB
from dispatcher import template_store
from dispatcher.template_store import Template, TemplateVersion
from dispatcher.templates import SmsCost, TemplateDraft, TemplateEngine, Variants

endpoints = EndpointTable("templates")
ENGINE = web.AppKey("template_engine", TemplateEngine)


class TemplateSave(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    topic: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
    variants: Variants
    language: Annotated[str, msgspec.Meta(pattern="^(uk|en)$")] = "uk"
    urgent: bool = False

    def draft(self) -> TemplateDraft:
        return TemplateDraft(name=self.name, variants=self.variants, language=self.language)  # type: ignore[arg-type]


class TemplateSaved(msgspec.Struct):
    template: Template
    variables: list[str]
    sms: SmsCost | None


class TemplatePage(msgspec.Struct):
    items: list[Template]
    next_after_id: int | None


class TemplateQuery(msgspec.Struct, forbid_unknown_fields=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] = 50
    after_id: Annotated[int, msgspec.Meta(ge=0)] = 0


def _engine(request: web.Request) -> TemplateEngine:
    return request.app[ENGINE]


class VariableInfo(msgspec.Struct):
    name: str
    type: str
    description_uk: str
    description_en: str
    example: str
    nullable: bool


@endpoints.get("/api/v1/templates/variables", permission="templates.read",
               response=list[VariableInfo])
async def variables(request: web.Request) -> list[VariableInfo]:
    """The personalisation variables a template may use, with examples."""
    return [VariableInfo(v.name, v.type, v.description_uk, v.description_en, str(v.example),
                         v.nullable)
            for v in _engine(request).catalogue]


@endpoints.get("/api/v1/templates", permission="templates.read", query=TemplateQuery,
               response=TemplatePage)
async def list_templates(request: web.Request, query: TemplateQuery) -> TemplatePage:
    """Templates with their current version, in id order."""
    async with request.app[DB].acquire() as conn:
        items = await template_store.list_templates(conn, limit=query.limit, after_id=query.after_id)
    return TemplatePage(items, items[-1].id if len(items) == query.limit else None)


@endpoints.post("/api/v1/templates", permission="templates.manage", body=TemplateSave,
                response=TemplateSaved, status=201, errors=(400,))
async def create_template(request: web.Request, body: TemplateSave) -> TemplateSaved:
    """Create a template (version 1); rejected if it uses an unknown variable or breaks a limit."""
    async with request.app[DB].acquire() as conn:
        template, check = await template_store.create(conn, actor(request), _engine(request),
                                                      draft=body.draft(), topic=body.topic,
                                                      urgent=body.urgent)
    return TemplateSaved(template, list(check.variables), check.sms)


@endpoints.get("/api/v1/templates/{template_id}", permission="templates.read", response=Template,
               errors=(404,))
async def get_template(request: web.Request) -> Template:
    """A template with its current version."""
    async with request.app[DB].acquire() as conn:
        return await template_store.get(conn, path_int(request, "template_id"))


@endpoints.post("/api/v1/templates/{template_id}/versions", permission="templates.manage",
                body=TemplateSave, response=TemplateSaved, status=201, errors=(400, 404))
async def save_version(request: web.Request, body: TemplateSave) -> TemplateSaved:
    """Save a new version; campaigns keep the version they pinned."""
    async with request.app[DB].acquire() as conn:
        template, check = await template_store.save_version(
            conn, actor(request), _engine(request), path_int(request, "template_id"),
            draft=body.draft(), topic=body.topic, urgent=body.urgent)
    return TemplateSaved(template, list(check.variables), check.sms)


@endpoints.get("/api/v1/templates/{template_id}/versions/{version}", permission="templates.read",
               response=TemplateVersion, errors=(404,))
async def get_version(request: web.Request) -> TemplateVersion:
    """One version of a template, current or old."""
    async with request.app[DB].acquire() as conn:
        return await template_store.get_version(conn, path_int(request, "template_id"),
                                                path_int(request, "version"))
