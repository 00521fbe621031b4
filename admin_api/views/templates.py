"""The template library: save (every save a new version), read and preview versions, variables."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from aiohttp import web

from admin_api import paging
from admin_api.routing import EndpointTable, path_int
from admin_api.security import actor
from admin_api.typedefs import DB, SETTINGS
from dispatcher.recipients import Organisation
from dispatcher.templating import store as template_store
from dispatcher.templating.env import format_date, format_money
from dispatcher.templating.store import Template, TemplatePreview, TemplateVersion
from dispatcher.templating.templates import (
    SmsCost,
    TemplateChannel,
    TemplateDraft,
    TemplateEngine,
    TranslationCheck,
    Variants,
)
from herald.bounds import IdOrZero, Version
from rules.consent import UnsubscribeLinks

endpoints = EndpointTable("templates")
ENGINE = web.AppKey("template_engine", TemplateEngine)


class TemplateSave(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    topic: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
    variants: Variants
    language: Annotated[str, msgspec.Meta(pattern="^(uk|en)$")] = "uk"
    urgent: bool = False

    def draft(self) -> TemplateDraft:
        return TemplateDraft(name=self.name, variants=self.variants, language=self.language)  # type: ignore[arg-type]  # "uk" or "en" by its pattern


class TemplateSaved(msgspec.Struct):
    template: Template
    variables: list[str]
    sms: SmsCost | None
    # The example preview and SMS cost of each translation, by language.
    translations: dict[str, TranslationCheck] = {}


class TemplatePage(msgspec.Struct):
    items: list[Template]
    next_after_id: Annotated[int | None, paging.DEPRECATED_FIELD]
    next_cursor: str | None = None


class TemplateQuery(msgspec.Struct, forbid_unknown_fields=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] = 50
    after_id: Annotated[IdOrZero, paging.DEPRECATED_PARAM] = 0
    cursor: paging.Cursor | None = None


def _engine(request: web.Request) -> TemplateEngine:
    return request.app[ENGINE]


class VariableInfo(msgspec.Struct):
    """A personalisation variable: ``example`` is the raw value, ``printed`` how
    ``{{ name }}`` (money and dates with their filter) shows it in a Ukrainian template."""

    name: str
    type: str
    description_uk: str
    description_en: str
    example: str
    printed: str
    nullable: bool
    source: str


def _printed(type_: str, example: object) -> str:
    if type_ == "money":
        return format_money(example)
    if type_ == "date":
        return format_date(example)
    return str(example)


@endpoints.get(
    "/api/v1/templates/variables", permission="templates.read", response=list[VariableInfo]
)
async def variables(request: web.Request) -> list[VariableInfo]:
    """The personalisation variables a template may use, with examples."""
    return [
        VariableInfo(
            v.name,
            v.type,
            v.description_uk,
            v.description_en,
            str(v.example),
            _printed(v.type, v.example),
            v.nullable,
            v.source,
        )
        for v in _engine(request).catalogue
    ]


@endpoints.get(
    "/api/v1/templates", permission="templates.read", query=TemplateQuery, response=TemplatePage
)
async def list_templates(request: web.Request, query: TemplateQuery) -> TemplatePage:
    """Templates with their current version, in id order."""
    after_id = paging.start(query.cursor, query.after_id) or 0
    async with request.app[DB].acquire() as conn:
        items = await template_store.list_templates(conn, limit=query.limit, after_id=after_id)
    return TemplatePage(items, *paging.following(items, query.limit, lambda i: i.id))


@endpoints.post(
    "/api/v1/templates",
    permission="templates.manage",
    body=TemplateSave,
    response=TemplateSaved,
    status=201,
    errors=(400,),
)
async def create_template(request: web.Request, body: TemplateSave) -> TemplateSaved:
    """Create a template (version 1); rejected if it uses an unknown variable or breaks a limit."""
    async with request.app[DB].acquire() as conn:
        template, check = await template_store.create(
            conn,
            actor(request),
            _engine(request),
            draft=body.draft(),
            topic=body.topic,
            urgent=body.urgent,
        )
    return TemplateSaved(template, list(check.variables), check.sms, check.translations)


@endpoints.get(
    "/api/v1/templates/{template_id}", permission="templates.read", response=Template, errors=(404,)
)
async def get_template(request: web.Request) -> Template:
    """A template with its current version."""
    async with request.app[DB].acquire() as conn:
        return await template_store.get(conn, path_int(request, "template_id"))


@endpoints.post(
    "/api/v1/templates/{template_id}/versions",
    permission="templates.manage",
    body=TemplateSave,
    response=TemplateSaved,
    status=201,
    errors=(400, 404),
)
async def save_version(request: web.Request, body: TemplateSave) -> TemplateSaved:
    """Save a new version; campaigns keep the version they pinned."""
    async with request.app[DB].acquire() as conn:
        template, check = await template_store.save_version(
            conn,
            actor(request),
            _engine(request),
            path_int(request, "template_id"),
            draft=body.draft(),
            topic=body.topic,
            urgent=body.urgent,
        )
    return TemplateSaved(template, list(check.variables), check.sms, check.translations)


@endpoints.get(
    "/api/v1/templates/{template_id}/versions/{version}",
    permission="templates.read",
    response=TemplateVersion,
    errors=(404,),
)
async def get_version(request: web.Request) -> TemplateVersion:
    """One version of a template, current or old."""
    async with request.app[DB].acquire() as conn:
        return await template_store.get_version(
            conn, path_int(request, "template_id"), path_int(request, "version")
        )


class TemplateVersionQuery(msgspec.Struct, forbid_unknown_fields=True):
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] = 50
    before_version: Annotated[Version | None, paging.DEPRECATED_PARAM] = None
    cursor: paging.Cursor | None = None


class TemplateVersionPage(msgspec.Struct):
    items: list[TemplateVersion]
    next_before_version: Annotated[int | None, paging.DEPRECATED_FIELD]
    next_cursor: str | None = None


@endpoints.get(
    "/api/v1/templates/{template_id}/versions",
    permission="templates.read",
    query=TemplateVersionQuery,
    response=TemplateVersionPage,
    errors=(404,),
)
async def list_versions(request: web.Request, query: TemplateVersionQuery) -> TemplateVersionPage:
    """Every version of a template, newest first (campaigns and triggers pin one of them)."""
    before_version = paging.start(query.cursor, query.before_version)
    async with request.app[DB].acquire() as conn:
        items = await template_store.list_versions(
            conn, path_int(request, "template_id"), limit=query.limit, before_version=before_version
        )
    return TemplateVersionPage(items, *paging.following(items, query.limit, lambda i: i.version))


def organisation_of(request: web.Request) -> Organisation:
    """The organisation's details the variables of every message carry (from the settings)."""
    settings = request.app[SETTINGS]
    return Organisation(
        service_centre=settings.org_service_centre,
        contact_phone=settings.org_contact_phone,
        cabinet_url=settings.org_cabinet_url,
        app_url=settings.org_app_url,
        payment_url=settings.org_payment_url,
    )


class TemplatePreviewRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Whom to preview for, on which channel; ``language`` overrides the client's own."""

    client_id: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
    channel: TemplateChannel
    language: Literal["uk", "en"] | None = None


@endpoints.post(
    "/api/v1/templates/{template_id}/versions/{version}/preview",
    permission="templates.read",
    body=TemplatePreviewRequest,
    response=TemplatePreview,
    errors=(400, 404),
)
async def preview_version(request: web.Request, body: TemplatePreviewRequest) -> TemplatePreview:
    """A version rendered for a chosen client with their real variables, and the SMS cost."""
    settings = request.app[SETTINGS]
    organisation = organisation_of(request)
    async with request.app[DB].acquire() as conn:
        return await template_store.preview(
            conn,
            _engine(request),
            path_int(request, "template_id"),
            path_int(request, "version"),
            client_id=body.client_id,
            channel=body.channel,
            language=body.language,
            organisation=organisation,
            links=UnsubscribeLinks.from_settings(settings),
        )


class DraftPreviewRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A template being edited (not saved) and whom to preview it for."""

    template: TemplateSave
    client_id: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
    channel: TemplateChannel
    language: Literal["uk", "en"] | None = None


@endpoints.post(
    "/api/v1/templates/preview",
    permission="templates.read",
    body=DraftPreviewRequest,
    response=TemplatePreview,
    errors=(400, 404),
)
async def preview_draft(request: web.Request, body: DraftPreviewRequest) -> TemplatePreview:
    """A template not saved yet rendered for a chosen client (the constructor's live preview);
    a template that would not save is a 400 listing the problem (``template_id`` is 0)."""
    async with request.app[DB].acquire() as conn:
        return await template_store.preview_draft(
            conn,
            _engine(request),
            body.template.draft(),
            topic=body.template.topic,
            client_id=body.client_id,
            channel=body.channel,
            language=body.language,
            organisation=organisation_of(request),
            links=UnsubscribeLinks.from_settings(request.app[SETTINGS]),
        )


@endpoints.post(
    "/api/v1/templates/{template_id}/versions/{version}/make-current",
    permission="templates.manage",
    response=Template,
    errors=(404,),
)
async def make_version_current(request: web.Request) -> Template:
    """Make an older (or newer) version the current one: new campaigns and sends take it;
    campaigns keep the version they pinned. Journalled."""
    async with request.app[DB].acquire() as conn:
        return await template_store.make_current(
            conn,
            actor(request),
            path_int(request, "template_id"),
            path_int(request, "version"),
        )
