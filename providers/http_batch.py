"""The batch HTTP API shared by the SMS gateway and Viber adapters, and its wire format.

``POST {base_url}/v1/messages`` takes a JSON list of ``WireMessage`` (bearer token,
``Idempotency-Key`` header = hash of the batch's message ids) and answers
``{"results": [WireResult, ...]}``, one per message in order. Each item's
``message_id`` is its own idempotency key: an id the provider already accepted is
answered ``accepted`` again (same provider id) and is not delivered twice. A 429 with
``Retry-After`` throttles the whole batch; a 5xx fails it transiently.
"""

from __future__ import annotations

import abc
import email.utils
import hashlib
import time
from collections.abc import Sequence
from typing import Literal

import aiohttp
import msgspec

from providers.base import Channel, Outbound, Outcome, ProviderUnavailable, SendResult


class WireMessage(msgspec.Struct, omit_defaults=True):
    """One message of a batch request (the Viber fields stay empty for SMS)."""

    message_id: str
    to: str
    text: str
    button_text: str | None = None
    button_url: str | None = None
    image_url: str | None = None


WireStatus = Literal["accepted", "rejected", "transient", "throttled"]


class WireResult(msgspec.Struct, omit_defaults=True):
    """The provider's answer about one message."""

    message_id: str
    status: WireStatus
    provider_id: str | None = None
    error: str | None = None
    retry_after: float | None = None


class WireResponse(msgspec.Struct):
    results: list[WireResult]


_OUTCOMES: dict[str, Outcome] = {
    "accepted": Outcome.ACCEPTED,
    "rejected": Outcome.PERMANENT,
    "transient": Outcome.TRANSIENT,
    "throttled": Outcome.THROTTLED,
}
# A 429 without a usable Retry-After still needs some pause before the retry.
DEFAULT_RETRY_AFTER = 1.0


def batch_idempotency_key(message_ids: Sequence[str]) -> str:
    """The ``Idempotency-Key`` of a batch: the same ids in the same order, the same key."""
    digest = hashlib.blake2b("\n".join(message_ids).encode(), digest_size=16)
    return digest.hexdigest()


def parse_retry_after(value: str | None) -> float:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds, fractional too, or a date)."""
    if not value:
        return DEFAULT_RETRY_AFTER
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER
    return max(0.0, when.timestamp() - time.time())


class HttpBatchProvider(abc.ABC):
    """A provider speaking the batch HTTP API above over one pooled keep-alive session.

    Subclasses say which content they carry by overriding ``to_wire``. The session is
    created on the first ``send`` (it must belong to the running loop) and shared by
    every concurrent call.
    """

    name: str
    channel: Channel
    max_batch: int

    def __init__(
        self,
        *,
        name: str,
        channel: Channel,
        base_url: str,
        token: str,
        max_batch: int = 1000,
        timeout: float = 15.0,
        connect_timeout: float = 3.0,
        pool_size: int = 32,
    ) -> None:
        self.name = name
        self.channel = channel
        self.max_batch = max_batch
        self.url = base_url.rstrip("/") + "/v1/messages"
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=connect_timeout)
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(WireResponse)

    @abc.abstractmethod
    def to_wire(self, message: Outbound) -> WireMessage | None:
        """The wire form of a message, or None when this channel cannot carry its content."""

    def _session_for_send(self) -> aiohttp.ClientSession:
        if self._closed:
            raise ProviderUnavailable(f"{self.name}: provider is closed")
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._pool_size, keepalive_timeout=30, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, raise_for_status=False
            )
        return self._session

    async def send(self, batch: Sequence[Outbound]) -> list[SendResult]:
        """Hand a batch over in one request; one result per message, same order."""
        if len(batch) > self.max_batch:
            raise ValueError(
                f"{self.name}: batch of {len(batch)} exceeds max_batch {self.max_batch}"
            )
        results: list[SendResult | None] = [None] * len(batch)
        wire: list[WireMessage] = []
        positions: list[int] = []
        for i, message in enumerate(batch):
            item = self.to_wire(message)
            if item is None:
                # Wrong content for this channel is our bug, but one message's bug must
                # not sink the batch: fail it for good and send the rest.
                results[i] = SendResult(
                    message.message_id,
                    Outcome.PERMANENT,
                    error=f"unsupported_content:{type(message.content).__name__}",
                )
            else:
                wire.append(item)
                positions.append(i)
        if wire:
            answered = await self._post(wire)
            for i, result in zip(positions, answered, strict=True):
                results[i] = result
        return results  # type: ignore[return-value]  # every slot is filled above

    async def _post(self, wire: list[WireMessage]) -> list[SendResult]:
        ids = [m.message_id for m in wire]
        headers = dict(self._headers)
        headers["Idempotency-Key"] = batch_idempotency_key(ids)
        session = self._session_for_send()
        try:
            async with session.post(
                self.url, data=self._encoder.encode(wire), headers=headers
            ) as response:
                body = await response.read()
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # Nothing reached the provider: the whole channel is down for now.
            raise ProviderUnavailable(f"{self.name}: cannot connect to {self.url}: {exc}") from exc
        except TimeoutError:
            # The provider may have taken the batch; a resend is safe (idempotency keys).
            return _all(ids, Outcome.TRANSIENT, "timeout")
        except aiohttp.ClientError as exc:
            return _all(ids, Outcome.TRANSIENT, f"connection_lost:{type(exc).__name__}")
        if status == 200:
            return self._per_item(ids, body)
        if status == 429:
            return _all(ids, Outcome.THROTTLED, "throttled", parse_retry_after(retry_after))
        if status >= 500 or status == 408:
            return _all(ids, Outcome.TRANSIENT, f"http_{status}")
        if status in (401, 403, 404):
            # Wrong token or URL: no message is at fault, so none may go to fallback.
            raise ProviderUnavailable(
                f"{self.name}: HTTP {status} from {self.url}: {body[:200].decode(errors='replace')}"
            )
        return _all(ids, Outcome.PERMANENT, f"http_{status}")

    def _per_item(self, ids: list[str], body: bytes) -> list[SendResult]:
        try:
            answer = self._decoder.decode(body).results
        except (msgspec.DecodeError, msgspec.ValidationError):
            return _all(ids, Outcome.TRANSIENT, "bad_response")
        if len(answer) != len(ids) or any(
            a.message_id != i for a, i in zip(answer, ids, strict=True)
        ):
            by_id = {a.message_id: a for a in answer}
            answer_or_none = [by_id.get(i) for i in ids]
        else:
            answer_or_none = list(answer)
        results = []
        for message_id, item in zip(ids, answer_or_none, strict=True):
            if item is None:
                results.append(
                    SendResult(message_id, Outcome.TRANSIENT, error="missing_in_response")
                )
                continue
            outcome = _OUTCOMES[item.status]
            retry_after = item.retry_after
            if outcome is Outcome.THROTTLED and retry_after is None:
                retry_after = DEFAULT_RETRY_AFTER
            results.append(
                SendResult(
                    message_id,
                    outcome,
                    provider_id=item.provider_id,
                    retry_after=retry_after,
                    error=item.error,
                )
            )
        return results

    async def aclose(self) -> None:
        """Close the connection pool; later sends raise ProviderUnavailable."""
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


def _all(
    ids: list[str], outcome: Outcome, error: str, retry_after: float | None = None
) -> list[SendResult]:
    return [SendResult(i, outcome, retry_after=retry_after, error=error) for i in ids]
