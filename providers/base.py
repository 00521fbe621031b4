"""The one protocol every channel adapter implements, and the messages it carries.

A provider takes a batch of outbound messages and answers one result per message, in
order. Per-message trouble is a result, never an exception; only a failure of the whole
batch (connection refused, timeout) raises ProviderUnavailable. Every message carries a
deterministic ``message_id`` that the adapter passes to the provider as its idempotency
key, so a batch sent twice is delivered once.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

import msgspec

Channel = Literal["email", "viber", "sms"]
CHANNELS: tuple[Channel, ...] = ("email", "viber", "sms")


class SmsContent(msgspec.Struct, frozen=True, tag="sms"):
    text: str


class ViberContent(msgspec.Struct, frozen=True, tag="viber"):
    text: str
    button_text: str | None = None
    button_url: str | None = None
    image_url: str | None = None


class EmailContent(msgspec.Struct, frozen=True, tag="email"):
    subject: str
    html: str
    text: str


Content = SmsContent | ViberContent | EmailContent


class Outbound(msgspec.Struct, frozen=True):
    """One message to hand to a provider."""

    message_id: str
    channel: Channel
    address: str  # E.164 phone for sms/viber, e-mail address for email
    content: Content


class Outcome(enum.Enum):
    ACCEPTED = "accepted"  # the provider took it; a receipt may follow
    THROTTLED = "throttled"  # 429: try again after retry_after
    TRANSIENT = "transient"  # 5xx, timeout of this message: try again later
    PERMANENT = "permanent"  # rejected for good (bad number, blocked): go to fallback


class SendResult(msgspec.Struct, frozen=True):
    message_id: str
    outcome: Outcome
    provider_id: str | None = None
    retry_after: float | None = None
    error: str | None = None


class ReceiptStatus(enum.Enum):
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"


class Receipt(msgspec.Struct, frozen=True):
    """A delivery or read receipt as providers post it back to Herald (in batches)."""

    message_id: str
    status: ReceiptStatus
    at: float  # Unix time, seconds
    provider_id: str | None = None
    error: str | None = None


class ProviderUnavailable(Exception):
    """The whole batch could not be handed over (connection refused, timeout)."""


@runtime_checkable
class Provider(Protocol):
    """A channel adapter. ``max_batch`` bounds ``len(batch)`` of one ``send`` call."""

    name: str
    channel: Channel
    max_batch: int

    async def send(self, batch: Sequence[Outbound]) -> list[SendResult]:
        """Hand a batch over; one result per message, same order."""
        ...

    async def aclose(self) -> None: ...
