"""Campaign lifecycle: create, edit while draft, copy, launch, pause, resume, stop."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import asyncpg
import msgspec

from dispatcher import outcomes
from dispatcher.campaigns.types import Audience, Campaign, CampaignSpec, SegmentAudience
from dispatcher.templating import store as template_store
from dispatcher.templating.env import EVENT
from dispatcher.templating.templates import TemplateEngine
from herald import audit
from herald.audit import Actor, Change
from herald.errors import Conflict, InvalidInput, NotFound

audience_decoder = msgspec.json.Decoder(Audience)

_SELECT = """
SELECT id, name, status, template_id, template_version, channel_chain, receipt_timeout_seconds,
       audience::text AS audience, rate_per_minute, rate_per_hour, scheduled_at, audience_size,
       batches_total, launched_at, finished_at, error, created_at, updated_at
FROM campaigns
"""

# The campaign state machine, action -> {from status: to status}. Every write of
# campaigns.status is a move of this table, made by ``_move`` (tests/test_ownership.py
# holds the table to it): an operator launches, pauses, resumes, stops or unschedules;
# the scheduler starts a due campaign and completes a finished one.
TRANSITIONS: dict[str, dict[str, str]] = {
    "launch": {"draft": "scheduled"},
    "start": {"scheduled": "running"},
    "pause": {"running": "paused", "launching": "paused"},
    "resume": {"paused": "running"},
    "stop": {
        "scheduled": "stopped",
        "launching": "stopped",
        "running": "stopped",
        "paused": "stopped",
    },
    "unschedule": {"scheduled": "draft"},
    "complete": {"running": "completed"},
}
# What a move writes besides status and updated_at; its parameters follow $1-$3.
_ALSO_SETS = {
    "launch": ", scheduled_at = coalesce($4::timestamptz, herald_now())",
    "start": ", launched_at = herald_now(), shards = $4, audience_size = $5, batches_total = $6",
    "stop": ", finished_at = herald_now()",
    "complete": ", finished_at = herald_now()",
}


async def _move(
    conn: asyncpg.Connection, campaign_id: int, action: str, *args: object
) -> str | None:
    """Move the campaign by ``action`` if the state machine allows it from its status at this
    moment (checked by the statement itself); the new status, or None when not allowed."""
    allowed = TRANSITIONS[action]
    status: str | None = await conn.fetchval(
        "UPDATE campaigns SET status = m.target, updated_at = herald_now()"
        + _ALSO_SETS.get(action, "")
        + " FROM unnest($2::text[], $3::text[]) AS m(source, target) "
        "WHERE id = $1 AND campaigns.status = m.source RETURNING campaigns.status",
        campaign_id,
        list(allowed),
        list(allowed.values()),
        *args,
    )
    return status


def _campaign(row: asyncpg.Record) -> Campaign:
    data = dict(row)
    data["audience"] = audience_decoder.decode(data["audience"])
    return Campaign(**data)


async def get(conn: asyncpg.Connection, campaign_id: int) -> Campaign:
    row = await conn.fetchrow(_SELECT + " WHERE id = $1", campaign_id)
    if row is None:
        raise NotFound(f"campaign {campaign_id} does not exist")
    return _campaign(row)


async def list_campaigns(
    conn: asyncpg.Connection, *, limit: int, before_id: int | None, status: str | None
) -> list[Campaign]:
    rows = await conn.fetch(
        _SELECT + " WHERE ($1::bigint IS NULL OR id < $1) AND ($2::text IS NULL OR status = $2) "
        "ORDER BY id DESC LIMIT $3",
        before_id,
        status,
        limit,
    )
    return [_campaign(r) for r in rows]


def validate_chain(chain: Sequence[str]) -> None:
    """A chain names each channel at most once."""
    if len(set(chain)) != len(chain):
        raise InvalidInput("channel_chain", "a channel may appear only once in the chain")


async def _template_version(conn: asyncpg.Connection, template_id: int, version: int | None) -> int:
    row = await conn.fetchrow(
        "SELECT current_version FROM message_templates WHERE id = $1", template_id
    )
    if row is None:
        raise InvalidInput("template_id", f"template {template_id} does not exist")
    chosen = version or row["current_version"]
    exists = await conn.fetchval(
        "SELECT 1 FROM message_template_versions WHERE template_id = $1 AND version = $2",
        template_id,
        chosen,
    )
    if not exists:
        raise InvalidInput("template_version", f"template {template_id} has no version {chosen}")
    return chosen


async def _check_channels_in_template(
    conn: asyncpg.Connection, template_id: int, version: int, chain: Sequence[str]
) -> None:
    variants = await conn.fetchval(
        "SELECT variants FROM message_template_versions WHERE template_id = $1 AND version = $2",
        template_id,
        version,
    )
    missing = [c for c in chain if not (variants or {}).get(c)]
    if missing:
        raise InvalidInput(
            "channel_chain",
            f"template {template_id} v{version} has no variant for: {', '.join(missing)}",
        )
    # A fresh engine: a long-lived one caches by (template id, version), which another
    # database (the tests') may hold for a different template.
    compiled, _ = await template_store.load_for_sending(
        conn, TemplateEngine(), template_id, version
    )
    if EVENT in compiled.variables:
        raise InvalidInput(
            "template_id",
            f"template {template_id} v{version} reads event.* "
            "variables, which only triggered messages have",
        )


async def _check_audience(conn: asyncpg.Connection, spec: CampaignSpec) -> None:
    """A segment audience must name a segment that exists (else it would launch to nobody)."""
    if isinstance(spec.audience, SegmentAudience) and not await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM segments WHERE id = $1)", spec.audience.segment_id
    ):
        raise InvalidInput(
            "audience.segment_id", f"segment {spec.audience.segment_id} does not exist"
        )


def _values(spec: CampaignSpec, version: int) -> tuple[object, ...]:
    return (
        spec.name,
        spec.template_id,
        version,
        list(spec.channel_chain),
        spec.receipt_timeout_seconds,
        msgspec.to_builtins(spec.audience),
        spec.rate_per_minute,
        spec.rate_per_hour,
    )


async def create(conn: asyncpg.Connection, actor: Actor, spec: CampaignSpec) -> Campaign:
    validate_chain(spec.channel_chain)
    async with conn.transaction():
        version = await _template_version(conn, spec.template_id, spec.template_version)
        await _check_channels_in_template(conn, spec.template_id, version, spec.channel_chain)
        await _check_audience(conn, spec)
        campaign_id = await conn.fetchval(
            """
            INSERT INTO campaigns (name, template_id, template_version, channel_chain,
                                   receipt_timeout_seconds, audience, rate_per_minute,
                                   rate_per_hour, created_by)
            VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9) RETURNING id
            """,
            *_values(spec, version),
            actor.id,
        )
        await audit.record(
            conn,
            actor,
            [Change("campaign", str(campaign_id), "create", None, None, {"name": spec.name})],
        )
        return await get(conn, campaign_id)


async def update(
    conn: asyncpg.Connection, actor: Actor, campaign_id: int, spec: CampaignSpec
) -> Campaign:
    """Replace a draft's settings; a campaign past draft cannot be edited (copy it instead)."""
    validate_chain(spec.channel_chain)
    async with conn.transaction():
        before = await _locked(conn, campaign_id)
        if before.status != "draft":
            raise Conflict(
                f"campaign {campaign_id} is {before.status}; only a draft can be "
                "edited (copy it to make a new draft)"
            )
        version = await _template_version(conn, spec.template_id, spec.template_version)
        await _check_channels_in_template(conn, spec.template_id, version, spec.channel_chain)
        await _check_audience(conn, spec)
        await conn.execute(
            """
            UPDATE campaigns SET name = $2, template_id = $3, template_version = $4,
                   channel_chain = $5, receipt_timeout_seconds = $6, audience = $7::jsonb,
                   rate_per_minute = $8, rate_per_hour = $9, updated_at = herald_now()
            WHERE id = $1
            """,
            campaign_id,
            *_values(spec, version),
        )
        after = await get(conn, campaign_id)
        old = msgspec.to_builtins(before)
        new = msgspec.to_builtins(after)
        fields = (
            "name",
            "template_id",
            "template_version",
            "channel_chain",
            "receipt_timeout_seconds",
            "audience",
            "rate_per_minute",
            "rate_per_hour",
        )
        await audit.record(
            conn,
            actor,
            audit.field_changes("campaign", campaign_id, old, {f: new[f] for f in fields}),
        )
        return after


async def copy(conn: asyncpg.Connection, actor: Actor, campaign_id: int) -> Campaign:
    """A new draft with the same settings."""
    source = await get(conn, campaign_id)
    spec = CampaignSpec(
        name=f"{source.name} (копія)"[:200],
        template_id=source.template_id,
        template_version=source.template_version,
        audience=source.audience,
        channel_chain=list(source.channel_chain),  # type: ignore[arg-type]  # stored from a spec
        receipt_timeout_seconds=source.receipt_timeout_seconds,
        rate_per_minute=source.rate_per_minute,
        rate_per_hour=source.rate_per_hour,
    )
    return await create(conn, actor, spec)


async def _locked(conn: asyncpg.Connection, campaign_id: int) -> Campaign:
    row = await conn.fetchrow(_SELECT + " WHERE id = $1 FOR UPDATE", campaign_id)
    if row is None:
        raise NotFound(f"campaign {campaign_id} does not exist")
    return _campaign(row)


async def launch(
    conn: asyncpg.Connection, actor: Actor, campaign_id: int, at: dt.datetime | None
) -> Campaign:
    """Schedule a draft to start at ``at`` (now when None); the scheduler snapshots it."""
    async with conn.transaction():
        campaign = await _locked(conn, campaign_id)
        if campaign.status != "draft":
            raise Conflict(
                f"campaign {campaign_id} is {campaign.status}; only a draft can be launched"
            )
        await _check_channels_in_template(
            conn, campaign.template_id, campaign.template_version, campaign.channel_chain
        )
        if at is not None and at.tzinfo is None:
            raise InvalidInput("at", "give a time zone, e.g. 2026-12-01T09:00:00+02:00")
        await _move(conn, campaign_id, "launch", at)
        await audit.record(
            conn,
            actor,
            [Change("campaign", str(campaign_id), "update", "status", "draft", "scheduled")],
        )
        return await get(conn, campaign_id)


async def transition(
    conn: asyncpg.Connection, actor: Actor, campaign_id: int, action: str
) -> tuple[Campaign, Campaign]:
    """Apply pause/resume/stop/unschedule; return (before, after). Illegal moves are refused."""
    allowed = TRANSITIONS[action]
    async with conn.transaction():
        before = await _locked(conn, campaign_id)
        target = allowed.get(before.status)
        if target is None:
            raise Conflict(
                f"cannot {action} a campaign that is {before.status} "
                f"(allowed from: {', '.join(sorted(allowed))})"
            )
        await _move(conn, campaign_id, action)
        await audit.record(
            conn,
            actor,
            [Change("campaign", str(campaign_id), "update", "status", before.status, target)],
        )
        return before, await get(conn, campaign_id)


async def start(
    conn: asyncpg.Connection,
    campaign_id: int,
    *,
    shards: int,
    audience_size: int,
    batches_total: int,
) -> None:
    """Mark a scheduled campaign running with its snapshot's figures (the scheduler's move,
    in the transaction that wrote the snapshot); Conflict if it is no longer scheduled."""
    if await _move(conn, campaign_id, "start", shards, audience_size, batches_total) is None:
        raise Conflict(f"campaign {campaign_id} is no longer scheduled")


async def complete(conn: asyncpg.Connection, campaign_id: int) -> bool:
    """Mark a running campaign completed; False when it was not running any more."""
    return await _move(conn, campaign_id, "complete") is not None


async def record_conversions(
    conn: asyncpg.Connection, campaign_id: int, client_ids: list[int]
) -> list[int]:
    """Record that these recipients converted; each counts once. Returns those newly recorded.

    Only recipients the campaign actually sent a message to can convert.
    """
    await get(conn, campaign_id)
    return await outcomes.record_conversions(conn, campaign_id, client_ids)


class Watched(msgspec.Struct, frozen=True):
    """A campaign whose progress live pages follow: under way, or finished a moment ago."""

    id: int
    status: str
    audience_size: int | None


async def watched(conn: asyncpg.Connection, *, finished_within: float) -> list[Watched]:
    """Campaigns scheduled, running or paused, and those finished in the last
    ``finished_within`` seconds (their final figures reach the pages too)."""
    rows = await conn.fetch(
        "SELECT id, status, audience_size FROM campaigns "
        "WHERE status IN ('scheduled', 'launching', 'running', 'paused') "
        "OR finished_at > herald_now() - make_interval(secs => $1) ORDER BY id",
        finished_within,
    )
    return [Watched(**dict(r)) for r in rows]
