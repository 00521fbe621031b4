"""The template library: templates with topic and urgency, every save a new version.

Campaigns (and triggers) pin a version; every version stays readable and sendable, and
a version can be previewed for a real client with the variables a send would use.
"""

from __future__ import annotations

import datetime as dt

import asyncpg
import msgspec

from dispatcher.recipients import Organisation, load_recipients
from dispatcher.templating.sms_text import sms_stats
from dispatcher.templating.templates import (
    CompiledTemplate,
    FieldError,
    RenderedContent,
    RenderError,
    SmsCost,
    TemplateCheck,
    TemplateDraft,
    TemplateEngine,
    Variants,
)
from herald import audit
from herald.audit import Actor, Change
from herald.errors import InvalidInput, NotFound
from providers.base import SmsContent
from rules.consent import UnsubscribeLinks


class TemplateVersion(msgspec.Struct, frozen=True):
    template_id: int
    version: int
    language: str
    variants: Variants
    created_at: dt.datetime
    created_by: int | None = None


class Template(msgspec.Struct, frozen=True):
    id: int
    name: str
    topic: str
    urgent: bool
    current_version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    current: TemplateVersion


_SELECT = """
SELECT t.id, t.name, t.topic, t.urgent, t.current_version, t.created_at, t.updated_at,
       v.version, v.language, v.variants::text AS variants, v.created_at AS version_created_at
FROM message_templates t
JOIN message_template_versions v ON v.template_id = t.id AND v.version = t.current_version
"""


def _template(row: asyncpg.Record) -> Template:
    version = TemplateVersion(
        row["id"],
        row["version"],
        row["language"],
        msgspec.json.decode(row["variants"], type=Variants),
        row["version_created_at"],
    )
    return Template(
        row["id"],
        row["name"],
        row["topic"],
        row["urgent"],
        row["current_version"],
        row["created_at"],
        row["updated_at"],
        version,
    )


async def _check_topic(conn: asyncpg.Connection, topic: str) -> None:
    if not await conn.fetchval("SELECT 1 FROM message_topics WHERE code = $1", topic):
        known = [r[0] for r in await conn.fetch("SELECT code FROM message_topics ORDER BY code")]
        raise InvalidInput("topic", f"unknown topic {topic!r}; known: {', '.join(known)}")


async def get(conn: asyncpg.Connection, template_id: int) -> Template:
    row = await conn.fetchrow(_SELECT + " WHERE t.id = $1", template_id)
    if row is None:
        raise NotFound(f"template {template_id} does not exist")
    return _template(row)


async def list_templates(conn: asyncpg.Connection, *, limit: int, after_id: int) -> list[Template]:
    rows = await conn.fetch(_SELECT + " WHERE t.id > $1 ORDER BY t.id LIMIT $2", after_id, limit)
    return [_template(r) for r in rows]


_VERSION = (
    "SELECT template_id, version, language, variants::text AS variants, created_at, "
    "created_by FROM message_template_versions "
)


def _version(row: asyncpg.Record) -> TemplateVersion:
    return TemplateVersion(
        row["template_id"],
        row["version"],
        row["language"],
        msgspec.json.decode(row["variants"], type=Variants),
        row["created_at"],
        row["created_by"],
    )


async def get_version(conn: asyncpg.Connection, template_id: int, version: int) -> TemplateVersion:
    row = await conn.fetchrow(
        _VERSION + "WHERE template_id = $1 AND version = $2", template_id, version
    )
    if row is None:
        raise NotFound(f"template {template_id} has no version {version}")
    return _version(row)


async def list_versions(
    conn: asyncpg.Connection, template_id: int, *, limit: int, before_version: int | None
) -> list[TemplateVersion]:
    """A template's versions, newest first; ``before_version`` is the keyset cursor."""
    rows = await conn.fetch(
        _VERSION + "WHERE template_id = $1 AND ($2::integer IS NULL OR version < $2) "
        "ORDER BY version DESC LIMIT $3",
        template_id,
        before_version,
        limit,
    )
    if not rows and not await conn.fetchval(
        "SELECT 1 FROM message_templates WHERE id = $1", template_id
    ):
        raise NotFound(f"template {template_id} does not exist")
    return [_version(r) for r in rows]


async def create(
    conn: asyncpg.Connection,
    actor: Actor,
    engine: TemplateEngine,
    *,
    draft: TemplateDraft,
    topic: str,
    urgent: bool,
) -> tuple[Template, TemplateCheck]:
    """Validate (unknown variables, syntax, SMS length, links) and store version 1."""
    check = engine.validate(draft)
    async with conn.transaction():
        await _check_topic(conn, topic)
        template_id = await conn.fetchval(
            "INSERT INTO message_templates (name, topic, urgent, created_by) VALUES ($1, $2, $3, $4) "
            "RETURNING id",
            draft.name,
            topic,
            urgent,
            actor.id,
        )
        await conn.execute(
            "INSERT INTO message_template_versions (template_id, version, language, variants, "
            "created_by) VALUES ($1, 1, $2, $3::jsonb, $4)",
            template_id,
            draft.language,
            msgspec.to_builtins(draft.variants),
            actor.id,
        )
        await audit.record(
            conn,
            actor,
            [
                Change(
                    "template",
                    str(template_id),
                    "create",
                    None,
                    None,
                    {"name": draft.name, "topic": topic, "urgent": urgent},
                )
            ],
        )
        return await get(conn, template_id), check


async def save_version(
    conn: asyncpg.Connection,
    actor: Actor,
    engine: TemplateEngine,
    template_id: int,
    *,
    draft: TemplateDraft,
    topic: str,
    urgent: bool,
) -> tuple[Template, TemplateCheck]:
    """Save a new version; campaigns keep the version they pinned."""
    check = engine.validate(draft)
    async with conn.transaction():
        before = await conn.fetchrow(
            "SELECT * FROM message_templates WHERE id = $1 FOR UPDATE", template_id
        )
        if before is None:
            raise NotFound(f"template {template_id} does not exist")
        await _check_topic(conn, topic)
        # The highest version plus one: an older version made current again is not the last.
        version = (
            await conn.fetchval(
                "SELECT max(version) FROM message_template_versions WHERE template_id = $1",
                template_id,
            )
            or 0
        ) + 1
        await conn.execute(
            "INSERT INTO message_template_versions (template_id, version, language, variants, "
            "created_by) VALUES ($1, $2, $3, $4::jsonb, $5)",
            template_id,
            version,
            draft.language,
            msgspec.to_builtins(draft.variants),
            actor.id,
        )
        await conn.execute(
            "UPDATE message_templates SET name = $2, topic = $3, urgent = $4, current_version = $5, "
            "updated_at = herald_now() WHERE id = $1",
            template_id,
            draft.name,
            topic,
            urgent,
            version,
        )
        changes = audit.field_changes(
            "template",
            template_id,
            dict(before),
            {"name": draft.name, "topic": topic, "urgent": urgent, "current_version": version},
        )
        await audit.record(conn, actor, changes)
        return await get(conn, template_id), check


class VersionInfo(msgspec.Struct, frozen=True):
    """A version as the history lists it: who saved it, when, its language and channels."""

    version: int
    language: str
    created_at: dt.datetime
    created_by: int | None
    created_by_login: str | None
    channels: list[str]
    current: bool


async def version_history(conn: asyncpg.Connection, template_id: int) -> list[VersionInfo]:
    """Every version of a template, newest first, with the login of whoever saved it."""
    current = await conn.fetchval(
        "SELECT current_version FROM message_templates WHERE id = $1", template_id
    )
    if current is None:
        raise NotFound(f"template {template_id} does not exist")
    rows = await conn.fetch(
        "SELECT v.version, v.language, v.created_at, v.created_by, u.login, "
        "array(SELECT k FROM jsonb_each(v.variants) e(k, b) WHERE k <> 'translations' "
        "AND jsonb_typeof(b) = 'object' ORDER BY k) AS channels "
        "FROM message_template_versions v LEFT JOIN users u ON u.id = v.created_by "
        "WHERE v.template_id = $1 ORDER BY v.version DESC",
        template_id,
    )
    return [
        VersionInfo(
            r["version"],
            r["language"],
            r["created_at"],
            r["created_by"],
            r["login"],
            [c for c in r["channels"] if c],
            r["version"] == current,
        )
        for r in rows
    ]


async def make_current(
    conn: asyncpg.Connection, actor: Actor, template_id: int, version: int
) -> Template:
    """Make an existing version the current one (what new campaigns and sends take);
    campaigns keep the version they pinned. Journalled as a change of current_version."""
    async with conn.transaction():
        before = await conn.fetchrow(
            "SELECT current_version FROM message_templates WHERE id = $1 FOR UPDATE", template_id
        )
        if before is None:
            raise NotFound(f"template {template_id} does not exist")
        await get_version(conn, template_id, version)
        if before["current_version"] != version:
            await conn.execute(
                "UPDATE message_templates SET current_version = $2, updated_at = herald_now() "
                "WHERE id = $1",
                template_id,
                version,
            )
            await audit.record(
                conn,
                actor,
                [
                    Change(
                        "template",
                        str(template_id),
                        "update",
                        "current_version",
                        before["current_version"],
                        version,
                    )
                ],
            )
        return await get(conn, template_id)


async def load_for_sending(
    conn: asyncpg.Connection, engine: TemplateEngine, template_id: int, version: int
) -> tuple[CompiledTemplate, bool]:
    """The compiled template of a pinned version and its urgency (cache first, then database)."""
    row = await conn.fetchrow(
        "SELECT t.name, t.urgent, v.language, v.variants::text AS variants FROM message_templates t "
        "JOIN message_template_versions v ON v.template_id = t.id "
        "WHERE t.id = $1 AND v.version = $2",
        template_id,
        version,
    )
    if row is None:
        raise NotFound(f"template {template_id} has no version {version}")
    found = engine.cached(template_id, version, row["language"])
    if found is None:
        draft = TemplateDraft(
            name=row["name"],
            language=row["language"],
            variants=msgspec.json.decode(row["variants"], type=Variants),
        )
        found = engine.compiled(template_id, version, draft)
    return found, row["urgent"]


class TemplatePreview(msgspec.Struct):
    """A version rendered for one client: the content a send would hand to the provider.

    ``language`` is the one rendered (the client's, else Ukrainian, else the version's own);
    ``error`` says why this client's data does not render (then ``content`` is null);
    ``has_address`` whether the client has a phone or e-mail for the channel.
    """

    template_id: int
    version: int
    client_id: int
    channel: str
    language: str
    content: RenderedContent | None
    sms: SmsCost | None
    has_address: bool
    error: FieldError | None = None


# The client's language, and the English names of its primary account's region and
# tariff (the same account dispatcher.recipients picks: the oldest active one).
_CLIENT_EXTRAS = """
SELECT coalesce(c.language, 'uk') AS language, r.name_en AS region_en, t.name_en AS tariff_en
FROM clients c
LEFT JOIN LATERAL (
    SELECT region_code, tariff_code FROM accounts a WHERE a.client_id = c.id
    ORDER BY a.status = 'active' DESC, a.id LIMIT 1) a ON true
LEFT JOIN regions r ON r.code = a.region_code
LEFT JOIN tariffs t ON t.code = a.tariff_code
WHERE c.id = $1
"""


async def preview(
    conn: asyncpg.Connection,
    engine: TemplateEngine,
    template_id: int,
    version: int,
    *,
    client_id: int,
    channel: str,
    language: str | None,
    organisation: Organisation,
    links: UnsubscribeLinks,
) -> TemplatePreview:
    """Render a version for a real client with the variables and language a send would use."""
    compiled, _ = await load_for_sending(conn, engine, template_id, version)
    if not any(channel in compiled.bodies(lang).channels for lang in compiled.languages):
        raise InvalidInput(
            "channel",
            f"template {template_id} v{version} has no {channel} body; "
            f"it has: {', '.join(compiled.channels)}",
        )
    topic = await conn.fetchval("SELECT topic FROM message_templates WHERE id = $1", template_id)
    return await _render_for_client(
        conn,
        compiled,
        template_id,
        version,
        topic,
        client_id=client_id,
        channel=channel,
        language=language,
        organisation=organisation,
        links=links,
    )


async def preview_draft(
    conn: asyncpg.Connection,
    engine: TemplateEngine,
    draft: TemplateDraft,
    *,
    topic: str,
    client_id: int,
    channel: str,
    language: str | None,
    organisation: Organisation,
    links: UnsubscribeLinks,
) -> TemplatePreview:
    """A template being edited (not saved) rendered for a real client, as a send would.

    Raises TemplateInvalid when the draft does not compile (what a save would refuse).
    Its ``template_id`` and ``version`` are 0.
    """
    compiled = engine.compile(draft)
    if not any(channel in compiled.bodies(lang).channels for lang in compiled.languages):
        raise InvalidInput(
            "channel",
            f"the template has no {channel} body; it has: {', '.join(compiled.channels)}",
        )
    await _check_topic(conn, topic)
    return await _render_for_client(
        conn,
        compiled,
        0,
        0,
        topic,
        client_id=client_id,
        channel=channel,
        language=language,
        organisation=organisation,
        links=links,
    )


async def _render_for_client(
    conn: asyncpg.Connection,
    compiled: CompiledTemplate,
    template_id: int,
    version: int,
    topic: str,
    *,
    client_id: int,
    channel: str,
    language: str | None,
    organisation: Organisation,
    links: UnsubscribeLinks,
) -> TemplatePreview:
    extras = await conn.fetchrow(_CLIENT_EXTRAS, client_id)
    if extras is None:
        raise NotFound(f"no client {client_id}")
    [recipient] = await load_recipients(conn, [client_id], organisation)
    variables = {
        **recipient.variables,
        "unsubscribe_url": links.url(client_id, topic),
        "region_en": extras["region_en"] or "",
        "tariff_en": extras["tariff_en"] or "",
    }
    wanted = language or extras["language"]
    used = compiled.language_for(channel, wanted)
    address = recipient.email if channel == "email" else recipient.phone
    try:
        content = compiled.render(channel, variables, wanted)
    except RenderError as exc:
        return TemplatePreview(
            template_id,
            version,
            client_id,
            channel,
            used,
            None,
            None,
            address is not None,
            FieldError(exc.field, exc.reason),
        )
    cost = SmsCost(*sms_stats(content.text)) if isinstance(content, SmsContent) else None
    return TemplatePreview(
        template_id, version, client_id, channel, used, content, cost, address is not None
    )
