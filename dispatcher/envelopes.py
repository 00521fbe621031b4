"""What travels through the dispatch queues: small tagged msgspec structs, never recipient data.

Also the message ids, and ``Chain``, the channels a message tries in order (a campaign's
and a trigger rule's alike). Bottom of ``dispatcher``: imports nothing of Herald's but
``providers.base``.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from providers.base import Channel

Chain = Annotated[list[Channel], Meta(min_length=1, max_length=3)]


class CampaignBatch(msgspec.Struct, frozen=True, tag_field="kind", tag="campaign.batch"):
    """A reference to one row of campaign_batches: its recipients, at its chain step."""

    campaign_id: int
    batch_id: int


class RealtimeMessages(msgspec.Struct, frozen=True, tag_field="kind", tag="realtime.messages"):
    """References to rows of realtime_messages (triggered or operator messages), each at a step.

    One queue message carries the messages posted together (up to a few hundred), so the
    worker handles them as one unit of work; a reference to a step a message has already
    left is skipped.
    """

    refs: list[tuple[int, int]]  # (realtime_messages.id, step)


Envelope = CampaignBatch | RealtimeMessages

encoder = msgspec.json.Encoder()
decoder = msgspec.json.Decoder(Envelope)

# Message id prefixes: campaign, trigger, operator send.
REALTIME_PREFIXES = {"trigger": "t", "operator": "o"}


def message_id(campaign_id: int, client_id: int, step: int) -> str:
    """The deterministic id of one message: also the providers' idempotency key."""
    return f"c{campaign_id}:{client_id}:{step}"


def realtime_message_id(kind: str, unit_id: int, client_id: int, step: int) -> str:
    """The id of one step of a realtime message: 't<unit>:<client>:<step>' or 'o<...>'."""
    return f"{REALTIME_PREFIXES[kind]}{unit_id}:{client_id}:{step}"


def _split(value: str, prefixes: str) -> tuple[int, int, int]:
    if not value or value[0] not in prefixes:
        raise ValueError(f"not a message id of kind {prefixes!r}: {value!r}")
    first, client, step = value[1:].split(":")
    return int(first), int(client), int(step)


def parse_message_id(value: str) -> tuple[int, int, int]:
    """(campaign_id, client_id, step) of a campaign message id; ValueError otherwise."""
    return _split(value, "c")


def parse_realtime_id(value: str) -> tuple[int, int, int]:
    """(realtime message id, client_id, step) of a trigger or operator message id; ValueError otherwise."""
    return _split(value, "to")


def is_realtime_id(value: str) -> bool:
    return bool(value) and value[0] in "to"
