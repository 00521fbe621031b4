"""What travels through the dispatch queues: small tagged msgspec structs, never recipient data."""

from __future__ import annotations

import msgspec


class CampaignBatch(msgspec.Struct, frozen=True, tag_field="kind", tag="campaign.batch"):
    """A reference to one row of campaign_batches: its recipients, at its chain step."""

    campaign_id: int
    batch_id: int


Envelope = CampaignBatch

encoder = msgspec.json.Encoder()
decoder = msgspec.json.Decoder(Envelope)


def message_id(campaign_id: int, client_id: int, step: int) -> str:
    """The deterministic id of one message: also the providers' idempotency key."""
    return f"c{campaign_id}:{client_id}:{step}"


def parse_message_id(value: str) -> tuple[int, int, int]:
    """(campaign_id, client_id, step) of a campaign message id; ValueError otherwise."""
    if not value.startswith("c"):
        raise ValueError(f"not a campaign message id: {value!r}")
    campaign, client, step = value[1:].split(":")
    return int(campaign), int(client), int(step)
