"""The template library: templates with topic and urgency, every save a new version."""

from __future__ import annotations

import datetime as dt

import asyncpg
import msgspec

from crm import audit
from crm.audit import Actor, Change
from crm.errors import InvalidInput, NotFound
from dispatcher.templates import (CompiledTemplate, TemplateCheck, TemplateDraft, TemplateEngine,
                                  Variants)


class TemplateVersion(msgspec.Struct, frozen=True):
    template_id: int
    version: int
    language: str
    variants: Variants
    created_at: dt.datetime


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
    version = TemplateVersion(row["id"], row["version"], row["language"],
                              msgspec.json.decode(row["variants"], type=Variants),
                              row["version_created_at"])
    return Template(row["id"], row["name"], row["topic"], row["urgent"], row["current_version"],
                    row["created_at"], row["updated_at"], version)


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


async def get_version(conn: asyncpg.Connection, template_id: int, version: int) -> TemplateVersion:
    row = await conn.fetchrow(
        "SELECT template_id, version, language, variants::text AS variants, created_at "
        "FROM message_template_versions WHERE template_id = $1 AND version = $2",
        template_id, version)
    if row is None:
        raise NotFound(f"template {template_id} has no version {version}")
    return TemplateVersion(row["template_id"], row["version"], row["language"],
                           msgspec.json.decode(row["variants"], type=Variants), row["created_at"])


async def create(conn: asyncpg.Connection, actor: Actor, engine: TemplateEngine, *,
                 draft: TemplateDraft, topic: str, urgent: bool) -> tuple[Template, TemplateCheck]:
    """Validate (unknown variables, syntax, SMS length, links) and store version 1."""
    check = engine.validate(draft)
    async with conn.transaction():
        await _check_topic(conn, topic)
        template_id = await conn.fetchval(
            "INSERT INTO message_templates (name, topic, urgent, created_by) VALUES ($1, $2, $3, $4) "
            "RETURNING id", draft.name, topic, urgent, actor.id)
        await conn.execute(
            "INSERT INTO message_template_versions (template_id, version, language, variants, "
            "created_by) VALUES ($1, 1, $2, $3::jsonb, $4)",
            template_id, draft.language, msgspec.to_builtins(draft.variants), actor.id)
        await audit.record(conn, actor, [Change("template", str(template_id), "create", None, None,
                                                {"name": draft.name, "topic": topic,
                                                 "urgent": urgent})])
        return await get(conn, template_id), check


async def save_version(conn: asyncpg.Connection, actor: Actor, engine: TemplateEngine,
                       template_id: int, *, draft: TemplateDraft, topic: str,
                       urgent: bool) -> tuple[Template, TemplateCheck]:
    """Save a new version; campaigns keep the version they pinned."""
    check = engine.validate(draft)
    async with conn.transaction():
        before = await conn.fetchrow("SELECT * FROM message_templates WHERE id = $1 FOR UPDATE",
                                     template_id)
        if before is None:
            raise NotFound(f"template {template_id} does not exist")
        await _check_topic(conn, topic)
        version = before["current_version"] + 1
        await conn.execute(
            "INSERT INTO message_template_versions (template_id, version, language, variants, "
            "created_by) VALUES ($1, $2, $3, $4::jsonb, $5)",
            template_id, version, draft.language, msgspec.to_builtins(draft.variants), actor.id)
        await conn.execute(
            "UPDATE message_templates SET name = $2, topic = $3, urgent = $4, current_version = $5, "
            "updated_at = now() WHERE id = $1", template_id, draft.name, topic, urgent, version)
        changes = audit.field_changes("template", template_id, dict(before),
                                      {"name": draft.name, "topic": topic, "urgent": urgent,
                                       "current_version": version})
        await audit.record(conn, actor, changes)
        return await get(conn, template_id), check


async def load_for_sending(conn: asyncpg.Connection, engine: TemplateEngine, template_id: int,
                           version: int) -> tuple[CompiledTemplate, bool]:
    """The compiled template of a pinned version and its urgency (cache first, then database)."""
    row = await conn.fetchrow(
        "SELECT t.name, t.urgent, v.language, v.variants::text AS variants FROM message_templates t "
        "JOIN message_template_versions v ON v.template_id = t.id "
        "WHERE t.id = $1 AND v.version = $2", template_id, version)
    if row is None:
        raise NotFound(f"template {template_id} has no version {version}")
    found = engine.cached(template_id, version, row["language"])
    if found is None:
        draft = TemplateDraft(name=row["name"], language=row["language"],
                              variants=msgspec.json.decode(row["variants"], type=Variants))
        found = engine.compiled(template_id, version, draft)
    return found, row["urgent"]
