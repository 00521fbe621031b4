"""Campaign data as the API and the dispatcher exchange it (msgspec structs)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec
from msgspec import Meta

from dispatcher.envelopes import Chain
from herald.bounds import Id, Version

ClientId = Annotated[int, Meta(ge=1, le=2**32 - 1)]
RegionCode = Annotated[str, Meta(pattern=r"^UA-[0-9]{2}$")]


class ClientsAudience(msgspec.Struct, frozen=True, tag_field="kind", tag="clients"):
    """An explicit list of Client_IDs (larger audiences come from segments)."""

    client_ids: Annotated[list[ClientId], Meta(min_length=1, max_length=100_000)]


class AllClientsAudience(msgspec.Struct, frozen=True, tag_field="kind", tag="all"):
    """Every client with an active account, optionally only in the given regions."""

    regions: Annotated[list[RegionCode], Meta(min_length=1, max_length=30)] | None = None


class SegmentAudience(msgspec.Struct, frozen=True, tag_field="kind", tag="segment"):
    """The members of a segment, frozen when the campaign launches."""

    segment_id: Annotated[int, Meta(ge=1, le=2**63 - 1)]


Audience = ClientsAudience | AllClientsAudience | SegmentAudience


class CampaignSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a marketer sets when creating or editing a draft campaign."""

    name: Annotated[str, Meta(min_length=1, max_length=200)]
    template_id: Id
    audience: Audience
    template_version: Version | None = None
    channel_chain: Chain = msgspec.field(default_factory=lambda: ["email", "viber", "sms"])
    receipt_timeout_seconds: Annotated[int, Meta(ge=1, le=7 * 86400)] = 900
    rate_per_minute: Annotated[int, Meta(ge=1, le=10_000_000)] | None = None
    rate_per_hour: Annotated[int, Meta(ge=1, le=100_000_000)] | None = None


class Campaign(msgspec.Struct, frozen=True):
    id: int
    name: str
    status: str
    template_id: int
    template_version: int
    channel_chain: list[str]
    receipt_timeout_seconds: int
    audience: Audience
    rate_per_minute: int | None
    rate_per_hour: int | None
    scheduled_at: dt.datetime | None
    audience_size: int | None
    batches_total: int | None
    launched_at: dt.datetime | None
    finished_at: dt.datetime | None
    error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
