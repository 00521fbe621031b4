"""The template constructor (IC-01): one template with a body per channel in Ukrainian and
English, the variable palette, a live preview for a chosen client with the SMS cost and its
transliteration, validation on save (each error beside its field, at its line), the
versions with who and when, a diff of two versions and "make this version current".

Form fields of the bodies are named ``b.<language>.<channel>.<field>``; the version's own
language goes into ``variants``, the other one into ``variants.translations``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import msgspec
from aiohttp import web
from multidict import MultiDictProxy

from admin_api import inputs
from admin_api.routing import EndpointTable, decode_query, path_int
from admin_api.security import actor
from admin_api.typedefs import DB, SETTINGS
from admin_api.ui import forms
from admin_api.ui.menu import N_
from admin_api.ui.rendering import render
from admin_api.views.templates import ENGINE, organisation_of
from crm import consents
from dispatcher.templating import store as template_store
from dispatcher.templating.sms_text import sms_stats, transliterate
from dispatcher.templating.store import TemplatePreview
from dispatcher.templating.templates import (
    FieldError,
    RenderError,
    SmsCost,
    TemplateDraft,
    TemplateInvalid,
    Variants,
    decode_draft,
)
from herald.bounds import Id, Version
from herald.errors import InvalidInput
from providers.base import SmsContent
from rules.consent import UnsubscribeLinks

endpoints = EndpointTable("ui")

LANGUAGES = ("uk", "en")
# Each channel's fields in the form: (field, kind) — kind picks the editor.
CHANNEL_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "sms": (("text", "area"), ("transliterate", "translit")),
    "viber": (
        ("text", "area"),
        ("button_text", "line"),
        ("button_url", "line"),
        ("image_url", "line"),
    ),
    "email": (("subject", "line"), ("html", "code"), ("text", "area")),
    "chatbot": (("text", "area"), ("buttons", "buttons")),
    "ivr": (("text", "area"),),
}
# The fields without which a channel's body is absent (the others are optional).
REQUIRED = {"sms": "text", "viber": "text", "email": "html", "chatbot": "text", "ivr": "text"}
FIELD_LABELS = {
    "text": N_("Text"),
    "transliterate": N_("Transliterate to Latin"),
    "button_text": N_("Button caption"),
    "button_url": N_("Button link"),
    "image_url": N_("Image link"),
    "subject": N_("Subject"),
    "html": N_("HTML body"),
    "buttons": N_("Buttons (one per line: caption | link)"),
}
# Where a variable comes from (the table of its catalogue source), as palette groups.
PALETTE_GROUPS = (
    ("clients", N_("Client")),
    ("accounts", N_("Account")),
    ("meters", N_("Account")),
    ("regions", N_("Account")),
    ("tariffs", N_("Account")),
    ("billing_snapshots", N_("Billing")),
    ("cases", N_("Case")),
    ("case_events", N_("Case")),
    ("case_categories", N_("Case")),
    ("case_statuses", N_("Case")),
    ("settings", N_("Organisation")),
    ("signed", N_("Organisation")),
)


def field_name(language: str, channel: str, field: str) -> str:
    return f"b.{language}.{channel}.{field}"


def _buttons(text: str) -> list[dict[str, str]]:
    found = []
    for line in text.splitlines():
        if not line.strip():
            continue
        caption, _, url = line.partition("|")
        button = {"text": caption.strip()}
        if url.strip():
            button["url"] = url.strip()
        found.append(button)
    return found


def _bodies(values: Mapping[str, str], language: str) -> dict[str, Any]:
    bodies: dict[str, Any] = {}
    for channel, fields in CHANNEL_FIELDS.items():
        if not values.get(field_name(language, channel, REQUIRED[channel]), "").strip():
            continue
        body: dict[str, Any] = {}
        for field, kind in fields:
            value = values.get(field_name(language, channel, field), "")
            if kind == "buttons":
                if value.strip():
                    body[field] = _buttons(value)
            elif value.strip():
                body[field] = value if kind in ("area", "code") else value.strip()
        bodies[channel] = body
    return bodies


def draft_of(values: Mapping[str, str]) -> TemplateDraft:
    """The draft the form describes; a malformed one is a TemplateInvalid naming the field."""
    language = values.get("language") or "uk"
    if language not in LANGUAGES:
        raise InvalidInput("language", "uk or en")
    variants = _bodies(values, language)
    other = "en" if language == "uk" else "uk"
    translation = _bodies(values, other)
    if translation:
        variants["translations"] = {other: translation}
    raw = {"name": values.get("name", "").strip(), "language": language, "variants": variants}
    if not raw["name"]:
        raise TemplateInvalid([FieldError("name", "a name is required")])
    return decode_draft(msgspec.json.encode(raw))


def form_values(draft_variants: Variants, language: str) -> dict[str, str]:
    """The form's body fields of a stored version."""
    values: dict[str, str] = {}
    other = "en" if language == "uk" else "uk"
    translations = draft_variants.translations
    for lang, bodies in (
        (language, draft_variants),
        (other, getattr(translations, other) if translations is not None else None),
    ):
        if bodies is None:
            continue
        for channel, fields in CHANNEL_FIELDS.items():
            body = getattr(bodies, channel)
            if body is None:
                continue
            for field, kind in fields:
                value = getattr(body, field)
                if value is None:
                    continue
                if kind == "buttons":
                    value = "\n".join(b.text + (f" | {b.url}" if b.url else "") for b in value)
                values[field_name(lang, channel, field)] = str(value)
    return values


def error_field(path: str, language: str) -> tuple[str, int | None]:
    """The form field an error path names (``variants.translations.en.sms.text`` ->
    ``b.en.sms.text``), and the button's row for a chatbot button's error."""
    parts = path.split(".")
    if parts[:1] != ["variants"]:
        return path, None
    parts = parts[1:]
    lang = language
    if parts[:1] == ["translations"] and len(parts) >= 2:
        lang, parts = parts[1], parts[2:]
    if len(parts) >= 2 and parts[1] == "buttons":
        row = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else None
        return field_name(lang, parts[0], "buttons"), row
    if len(parts) >= 2:
        return field_name(lang, parts[0], parts[1]), None
    if len(parts) == 1 and parts[0] in CHANNEL_FIELDS:
        return field_name(lang, parts[0], REQUIRED[parts[0]]), None
    return "variants", None


class FormError(msgspec.Struct):
    field: str
    detail: str
    line: int | None = None
    source_line: str | None = None


def form_errors(
    error: InvalidInput, values: Mapping[str, str], language: str
) -> dict[str, list[FormError]]:
    """Every problem of a refused template keyed by its form field, with the offending line."""
    found = getattr(error, "errors", None) or [FieldError(error.field, error.detail)]
    by_field: dict[str, list[FormError]] = {}
    for e in found:
        name, row = error_field(e.field, language)
        line = e.line if e.line is not None else (row + 1 if row is not None else None)
        source = values.get(name, "").splitlines()
        shown = source[line - 1] if line is not None and 0 < line <= len(source) else None
        by_field.setdefault(name, []).append(FormError(name, e.detail, line, shown))
    return by_field


async def _topics(request: web.Request) -> list[consents.Topic]:
    async with request.app[DB].acquire() as conn:
        return await consents.topics(conn)


def palette(request: web.Request) -> list[tuple[str, list[Any]]]:
    """The catalogue's variables grouped by where they come from, plus the event's data."""
    groups: dict[str, list[Any]] = {}
    names = dict(PALETTE_GROUPS)
    for v in request.app[ENGINE].catalogue:
        table = v.source.split(".")[0]
        groups.setdefault(names.get(table, N_("Other")), []).append(v)
    return list(groups.items())


class TemplateMeta(msgspec.Struct):
    name: str = ""
    topic: str = ""
    urgent: bool = False
    language: Literal["uk", "en"] = "uk"


async def _page(
    request: web.Request,
    *,
    template: Any,
    values: Mapping[str, str],
    meta: TemplateMeta,
    errors: Mapping[str, list[FormError]] | None = None,
    status: int = 200,
    shown_version: int | None = None,
    saved: bool = False,
) -> web.Response:
    versions = []
    if template is not None:
        async with request.app[DB].acquire() as conn:
            versions = await template_store.version_history(conn, template.id)
    return await render(
        request,
        "template_edit.html",
        {
            "template": template,
            "values": values,
            "meta": meta,
            "errors": errors or {},
            "topics": await _topics(request),
            "languages": LANGUAGES,
            "channel_fields": CHANNEL_FIELDS,
            "field_labels": FIELD_LABELS,
            "field_name": field_name,
            "palette": palette(request),
            "versions": versions,
            "shown_version": shown_version,
            "saved": saved,
        },
        status=status,
    )


class TemplateListQuery(msgspec.Struct):
    after_id: Id | None = None


@endpoints.get("/ui/templates", permission="templates.read", response=str, media_type="text/html")
async def templates_page(request: web.Request) -> web.Response:
    """The template library: name, topic, current version, its channels."""
    query = forms.query(request, TemplateListQuery)
    async with request.app[DB].acquire() as conn:
        items = await template_store.list_templates(
            conn, limit=LIST_PAGE + 1, after_id=query.after_id or 0
        )
    more = len(items) > LIST_PAGE
    items = items[:LIST_PAGE]
    return await render(
        request,
        "templates.html",
        {
            "items": items,
            "next_after": items[-1].id if more else None,
            "channels": {t.id: _channels(t.current.variants) for t in items},
            "topics": {t.code: t for t in await _topics(request)},
        },
    )


LIST_PAGE = 100


def _channels(variants: Variants) -> list[str]:
    return [c for c in CHANNEL_FIELDS if getattr(variants, c) is not None]


@endpoints.get(
    "/ui/templates/new", permission="templates.manage", response=str, media_type="text/html"
)
async def new_template(request: web.Request) -> web.Response:
    """An empty constructor."""
    return await _page(request, template=None, values={}, meta=TemplateMeta())


@endpoints.get(
    r"/ui/templates/{template_id:\d+}",
    permission="templates.read",
    response=str,
    media_type="text/html",
    errors=(404,),
)
async def template_page(request: web.Request) -> web.Response:
    """A template in the constructor: its current version, or ``?version=N``."""
    template_id = path_int(request, "template_id")
    wanted = forms.query(request, ShowVersion)
    async with request.app[DB].acquire() as conn:
        template = await template_store.get(conn, template_id)
        version = (
            await template_store.get_version(conn, template_id, wanted.version)
            if wanted.version
            else template.current
        )
    meta = TemplateMeta(template.name, template.topic, template.urgent, version.language)  # type: ignore[arg-type]  # a stored language
    return await _page(
        request,
        template=template,
        values=form_values(version.variants, version.language),
        meta=meta,
        shown_version=version.version,
        saved=wanted.saved,
    )


class ShowVersion(msgspec.Struct):
    version: Version | None = None
    saved: bool = False


def _meta(values: Mapping[str, str]) -> TemplateMeta:
    raw = {k: values[k] for k in ("name", "topic", "language") if values.get(k)}
    raw["urgent"] = "true" if values.get("urgent") in ("on", "true") else "false"
    return decode_query(raw, TemplateMeta)


def _values(posted: MultiDictProxy[Any]) -> dict[str, str]:
    return {k: v for k, v in posted.items() if isinstance(v, str) and k != "csrf_token"}


async def _save(request: web.Request, template_id: int | None) -> web.Response:
    values = _values(await inputs.read_form(request))
    meta = _meta(values)
    template = None
    async with request.app[DB].acquire() as conn:
        if template_id is not None:
            template = await template_store.get(conn, template_id)
        try:
            draft = draft_of(values)
            if not meta.topic:
                raise InvalidInput("topic", "choose the topic of the messages")
            engine = request.app[ENGINE]
            if template_id is None:
                saved, _ = await template_store.create(
                    conn, actor(request), engine, draft=draft, topic=meta.topic, urgent=meta.urgent
                )
            else:
                saved, _ = await template_store.save_version(
                    conn,
                    actor(request),
                    engine,
                    template_id,
                    draft=draft,
                    topic=meta.topic,
                    urgent=meta.urgent,
                )
        except InvalidInput as error:
            return await _page(
                request,
                template=template,
                values=values,
                meta=meta,
                errors=form_errors(error, values, meta.language),
                status=400,
            )
    target = f"/ui/templates/{saved.id}?saved=true"
    if request.headers.get("HX-Request") == "true":
        return web.Response(status=200, headers={"HX-Location": target})
    raise web.HTTPSeeOther(target)


@endpoints.post(
    "/ui/templates",
    permission="templates.manage",
    response=str,
    media_type="text/html",
    errors=(400,),
)
async def create_template(request: web.Request) -> web.Response:
    """Save a new template (version 1), or show every problem beside its field."""
    return await _save(request, None)


@endpoints.post(
    r"/ui/templates/{template_id:\d+}",
    permission="templates.manage",
    response=str,
    media_type="text/html",
    errors=(400, 404),
)
async def save_template(request: web.Request) -> web.Response:
    """Save the constructor as a new version, or show every problem beside its field."""
    return await _save(request, path_int(request, "template_id"))


class PreviewSmsText(msgspec.Struct):
    text: str
    cost: SmsCost


def sms_variants(text: str, table: str | None) -> tuple[PreviewSmsText, PreviewSmsText | None]:
    """An SMS text with its cost, and its Latin transliteration with that cost (when the
    variant does not transliterate already)."""
    own = PreviewSmsText(text, SmsCost(*sms_stats(text)))
    if table is not None:
        return own, None
    latin = transliterate(text)
    return own, (PreviewSmsText(latin, SmsCost(*sms_stats(latin))) if latin != text else None)


class PreviewForm(msgspec.Struct):
    client_id: Id | None = None
    channel: Literal["sms", "viber", "email", "chatbot", "ivr"] = "sms"
    preview_language: Literal["uk", "en"] | None = None


@endpoints.post(
    "/ui/templates/preview",
    permission="templates.read",
    response=str,
    media_type="text/html",
    errors=(400,),
)
async def preview_part(request: web.Request) -> web.Response:
    """The constructor's live preview: the bodies as they are now, rendered for the chosen
    client (or with the catalogue's example values), the SMS cost and its transliteration."""
    values = _values(await inputs.read_form(request))
    chosen = decode_query(
        {k: values[k] for k in ("client_id", "channel", "preview_language") if values.get(k)},
        PreviewForm,
    )
    meta = _meta(values)
    ctx: dict[str, Any] = {
        "chosen": chosen,
        "errors": {},
        "preview": None,
        "examples": False,
        "no_body": None,
    }
    try:
        # A template without a name yet still previews.
        draft = draft_of({**values, "name": values.get("name", "").strip() or "-"})
    except InvalidInput as error:
        ctx["errors"] = form_errors(error, values, meta.language)
        return await render(request, "_template_preview.html", ctx)
    if getattr(draft.variants, chosen.channel) is None:
        ctx["no_body"] = chosen.channel
        return await render(request, "_template_preview.html", ctx)
    engine = request.app[ENGINE]
    try:
        if chosen.client_id is not None:
            async with request.app[DB].acquire() as conn:
                preview = await template_store.preview_draft(
                    conn,
                    engine,
                    draft,
                    topic=meta.topic or "service",
                    client_id=chosen.client_id,
                    channel=chosen.channel,
                    language=chosen.preview_language,
                    organisation=organisation_of(request),
                    links=UnsubscribeLinks.from_settings(request.app[SETTINGS]),
                )
        else:
            preview = _example_preview(engine, draft, chosen)
            ctx["examples"] = True
    except InvalidInput as error:
        ctx["errors"] = form_errors(error, values, meta.language)
        return await render(request, "_template_preview.html", ctx)
    ctx["preview"] = preview
    if isinstance(preview.content, SmsContent):
        table = _sms_table(draft, preview.language)
        ctx["sms"], ctx["latin"] = sms_variants(preview.content.text, table)
    return await render(request, "_template_preview.html", ctx)


def _sms_table(draft: TemplateDraft, language: str) -> str | None:
    bodies = draft.variants
    if language != draft.language and draft.variants.translations is not None:
        bodies = getattr(draft.variants.translations, language) or bodies
    return bodies.sms.transliterate if bodies.sms is not None else None


def _example_preview(engine: Any, draft: TemplateDraft, chosen: PreviewForm) -> TemplatePreview:
    compiled = engine.compile(draft)
    if not any(chosen.channel in compiled.bodies(lang).channels for lang in compiled.languages):
        raise InvalidInput("channel", f"the template has no {chosen.channel} body")
    used = compiled.language_for(chosen.channel, chosen.preview_language)
    try:
        content = compiled.render(
            chosen.channel, engine.catalogue.examples(), chosen.preview_language
        )
    except RenderError as exc:
        raise InvalidInput(exc.field, exc.reason) from None
    return TemplatePreview(0, 0, 0, chosen.channel, used, content, None, True)


class DiffQuery(msgspec.Struct):
    a: Version
    b: Version


def version_lines(variants: Variants, language: str) -> list[str]:
    """A version as text lines, one block per field, for the diff."""
    values = form_values(variants, language)
    lines = [f"# language: {language}"]
    for name in sorted(values, key=_field_order):
        lines.append(f"## {name[2:]}")
        lines += values[name].splitlines() or [""]
    return lines


def _field_order(name: str) -> tuple[int, int, str]:
    _, lang, channel, field = name.split(".")
    channels = list(CHANNEL_FIELDS)
    return (channels.index(channel), LANGUAGES.index(lang), field)


class DiffLine(msgspec.Struct):
    kind: str  # "add", "del", "ctx", "hunk"
    text: str


def diff_lines(old: list[str], new: list[str]) -> list[DiffLine]:
    out = []
    for line in difflib.unified_diff(old, new, lineterm="", n=2):
        if line.startswith(("---", "+++")):
            continue
        kind = {"@": "hunk", "+": "add", "-": "del"}.get(line[:1], "ctx")
        out.append(DiffLine(kind, line))
    return out


@endpoints.get(
    r"/ui/templates/{template_id:\d+}/diff",
    permission="templates.read",
    response=str,
    media_type="text/html",
    errors=(400, 404),
)
async def diff_part(request: web.Request) -> web.Response:
    """What changed from version ``a`` to version ``b`` (unified diff of every field)."""
    template_id = path_int(request, "template_id")
    query = forms.query(request, DiffQuery)
    async with request.app[DB].acquire() as conn:
        old = await template_store.get_version(conn, template_id, query.a)
        new = await template_store.get_version(conn, template_id, query.b)
    lines = diff_lines(
        version_lines(old.variants, old.language), version_lines(new.variants, new.language)
    )
    return await render(request, "_template_diff.html", {"a": old, "b": new, "lines": lines})


@endpoints.post(
    r"/ui/templates/{template_id:\d+}/versions/{version:\d+}/current",
    permission="templates.manage",
    response=str,
    media_type="text/html",
    errors=(404,),
)
async def make_current(request: web.Request) -> web.Response:
    """Make this version the current one; the page reloads showing it."""
    template_id = path_int(request, "template_id")
    async with request.app[DB].acquire() as conn:
        await template_store.make_current(
            conn, actor(request), template_id, path_int(request, "version")
        )
    target = f"/ui/templates/{template_id}"
    if request.headers.get("HX-Request") == "true":
        return web.Response(status=200, headers={"HX-Location": target})
    raise web.HTTPSeeOther(target)


def iter_errors(errors: Mapping[str, list[FormError]]) -> Iterator[FormError]:
    for found in errors.values():
        yield from found
