"""What a simulated provider decides and remembers: its configuration, verdicts, counts and receipts due.

One ``Ledger`` per simulated channel; the HTTP gateways and the SMTP sink only turn
their protocol into ``admit`` (one request) and ``submit`` (one message) calls, so
failures, throttling, duplicates and receipts behave the same on every channel.
"""

from __future__ import annotations

import collections
import random
import re
import time
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

from herald import clock
from providers.base import ReceiptStatus
from providers.sim.idset import IdSet, id_hash
from providers.sim.receipts import ReceiptQueue

Share = Annotated[float, Meta(ge=0.0, le=1.0)]
Millis = Annotated[float, Meta(ge=0.0)]
Count = Annotated[int, Meta(ge=0)]


class SimConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How a simulated provider behaves; ``PUT /{channel}/sim/config`` merges a partial one in."""

    # Latency of each request (HTTP: per batch, SMTP: per message), uniform +- jitter.
    latency_ms: Millis = 0.0
    latency_jitter_ms: Millis = 0.0
    # Random failures: a share of message ids rejected for good (the same ids on every
    # try), and a share of whole requests answered 5xx (SMTP: 451).
    permanent_rate: Share = 0.0
    transient_rate: Share = 0.0
    # Throttling: messages per second over all requests (0: none); over it the whole
    # request gets 429 with Retry-After (fractional seconds; SMTP: 451 4.7.0).
    max_per_second: Annotated[float, Meta(ge=0.0)] = 0.0
    retry_after_s: Annotated[float, Meta(ge=0.0)] | None = None  # None: until tokens suffice
    # Deterministic failures, for tests.
    fail_next_requests: Count = 0  # the next N requests answered fail_status
    fail_status: Annotated[int, Meta(ge=500, le=599)] = 503
    throttle_next_requests: Count = 0  # the next N requests answered 429
    permanent_pattern: str | None = None  # regex searched in the message id and the address
    transient_pattern: str | None = None  # matching ids fail transiently on their first
    transient_attempts: Count = 1  # transient_attempts submissions, then pass
    unknown_addresses: list[str] = []  # no such subscriber / not on Viber / no mailbox
    unknown_address_pattern: str | None = None
    # Receipts, posted in batches of up to receipt_batch_size at least every window.
    receipts_enabled: bool = True
    callback_url: str = ""  # default: Herald's /api/v1/providers/{channel}/receipts
    callback_token: str = ""
    delivered_after_ms: Millis = 500.0
    read_share: Share = 0.3  # of delivered messages, also read ...
    read_after_ms: Millis = 2000.0  # ... this long after acceptance
    failed_share: Share = 0.0  # a "failed" receipt instead of "delivered"
    no_receipt_share: Share = 0.0  # never any receipt (exercises receipt timeouts)
    no_receipt_pattern: str | None = None
    receipt_batch_size: Annotated[int, Meta(ge=1, le=10_000)] = 1000
    receipt_window_ms: Annotated[float, Meta(ge=1.0)] = 200.0
    receipt_concurrency: Annotated[int, Meta(ge=1, le=32)] = 2  # posts in flight at once
    # How many recent messages GET /{channel}/sim/messages can show (0: none).
    keep_messages: Count = 10_000


class SimStats(msgspec.Struct, kw_only=True):
    """Counts since start or reset; messages = accepted + duplicates + permanent + transient + throttled."""

    requests: int = 0
    messages: int = 0
    accepted: int = 0  # unique message ids accepted (delivered once)
    duplicates: int = 0  # submissions of an id already accepted
    permanent: int = 0
    transient: int = 0  # per message, including every message of a 5xx request
    throttled: int = 0  # messages in requests answered 429
    failed_requests: int = 0
    throttled_requests: int = 0
    batch_replays: int = 0  # requests repeating an Idempotency-Key already seen
    receipts_sent: int = 0
    receipts_pending: int = 0
    receipt_posts_failed: int = 0
    receipts_dropped: int = 0  # refused by the callback with a 4xx: not retried
    ids_memory_mb: float = 0.0


class ChannelSpec(msgspec.Struct, frozen=True):
    """What differs between the simulated channels."""

    channel: Literal["sms", "viber", "email"]
    address_pattern: str
    invalid_error: str
    unknown_error: str


_PHONE = r"^\+?[1-9][0-9]{7,14}$"
SPECS: dict[str, ChannelSpec] = {
    "sms": ChannelSpec("sms", _PHONE, "invalid_number", "no_such_subscriber"),
    "viber": ChannelSpec("viber", _PHONE, "invalid_number", "not_viber_user"),
    "email": ChannelSpec("email", r"^[^@\s]+@[^@\s]+$", "invalid_address", "no_such_mailbox"),
}

Judgement = Literal["accepted", "rejected", "transient"]
ACCEPTED: Final = "accepted"
REJECTED: Final = "rejected"
TRANSIENT: Final = "transient"


class MessageRecord(msgspec.Struct, kw_only=True):
    """A recent message, for GET /{channel}/sim/messages."""

    message_id: str
    address: str
    status: str
    at: float
    provider_id: str | None = None
    error: str | None = None
    submissions: int = 1
    content: Any = None


class Refusal(msgspec.Struct, frozen=True):
    """A whole request refused: HTTP status and, for 429, seconds to wait."""

    status: int
    retry_after: float | None = None


class ReceiptBatch:
    """Ids accepted by one request, sorted by the receipts they will get."""

    __slots__ = ("delivered", "read", "failed")

    def __init__(self) -> None:
        self.delivered: list[str] = []
        self.read: list[str] = []
        self.failed: list[str] = []


class Ledger:
    """The state of one simulated provider: config, ids accepted, counts, recent messages, receipts."""

    def __init__(self, spec: ChannelSpec, defaults: SimConfig) -> None:
        self.spec = spec
        self._defaults = defaults
        self._address = re.compile(spec.address_pattern)
        self._prefix = spec.channel + "-"
        self.receipts = ReceiptQueue()
        self.reset()

    def reset(self) -> None:
        """Forget every id, count, receipt due and config change."""
        self.stats = SimStats()
        self._ids = IdSet()
        self._batch_keys: set[str] = set()
        self._attempts: dict[str, int] = {}
        self._recent: collections.OrderedDict[str, MessageRecord] = collections.OrderedDict()
        self.receipts.clear()
        self._apply(msgspec.structs.replace(self._defaults))  # a copy: admit() counts down in it

    @property
    def config(self) -> SimConfig:
        return self._config

    def configure(self, patch: dict[str, Any]) -> SimConfig:
        """Merge ``patch`` into the config; raise ValueError (naming the field) on a bad value."""
        merged = msgspec.structs.asdict(self._config) | patch
        try:
            config = msgspec.convert(merged, SimConfig)
        except msgspec.ValidationError as exc:
            raise ValueError(str(exc)) from None
        self._apply(config)
        return config

    def _apply(self, config: SimConfig) -> None:
        try:
            patterns = [
                _compile(p)
                for p in (
                    config.permanent_pattern,
                    config.transient_pattern,
                    config.unknown_address_pattern,
                    config.no_receipt_pattern,
                )
            ]
        except re.error as exc:
            raise ValueError(f"bad pattern: {exc}") from None
        self._permanent_re, self._transient_re, self._unknown_re, self._no_receipt_re = patterns
        self._unknown = frozenset(config.unknown_addresses)
        # The per-message fast path skips every check when none is configured.
        self._checks = bool(
            config.permanent_rate
            or self._permanent_re
            or self._transient_re
            or self._unknown
            or self._unknown_re
        )
        self._config = config
        self._tokens = config.max_per_second
        self._tokens_at = time.monotonic()

    def provider_id(self, message_id: str) -> str:
        """The provider's id for a message: stable for the life of the simulator."""
        return f"{self._prefix}{id_hash(message_id) & 0xFFFF_FFFF_FFFF_FFFF:016x}"

    def admit(self, messages: int, batch_key: str | None = None) -> Refusal | None:
        """Count a request of ``messages`` messages; a Refusal if the whole request fails."""
        stats, config = self.stats, self._config
        stats.requests += 1
        if batch_key is not None:
            if batch_key in self._batch_keys:
                stats.batch_replays += 1
            else:
                self._batch_keys.add(batch_key)
        refusal: Refusal | None = None
        if config.fail_next_requests:
            config.fail_next_requests -= 1
            refusal = Refusal(config.fail_status)
        elif config.throttle_next_requests:
            config.throttle_next_requests -= 1
            refusal = Refusal(
                429, config.retry_after_s if config.retry_after_s is not None else 0.1
            )
        elif config.transient_rate and random.random() < config.transient_rate:
            refusal = Refusal(503)
        elif config.max_per_second:
            wait = self._take_tokens(messages, config.max_per_second)
            if wait is not None:
                refusal = Refusal(
                    429, config.retry_after_s if config.retry_after_s is not None else wait
                )
        if refusal is None:
            return None
        stats.messages += messages
        if refusal.status == 429:
            stats.throttled_requests += 1
            stats.throttled += messages
        else:
            stats.failed_requests += 1
            stats.transient += messages
        return refusal

    def _take_tokens(self, n: int, rate: float) -> float | None:
        now = time.monotonic()
        tokens = min(rate, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        # A batch larger than a second's worth passes on a full bucket and leaves it
        # in debt; otherwise it could never pass.
        if tokens >= n or tokens >= rate:
            self._tokens = tokens - n
            return None
        self._tokens = tokens
        return round((n - tokens) / rate, 3)

    def submit(
        self, message_id: str, address: str, content: Any, receipts: ReceiptBatch
    ) -> tuple[Judgement, str | None]:
        """Judge one message: (ACCEPTED, provider id) or (REJECTED | TRANSIENT, error code)."""
        stats = self.stats
        stats.messages += 1
        key = id_hash(message_id)
        if key in self._ids:
            stats.duplicates += 1
            self._record(message_id, address, ACCEPTED, None, content, duplicate=True)
            return ACCEPTED, self.provider_id(message_id)
        error = self._refuse(message_id, address, key) if self._checks else None
        if error is None and not self._address.match(address):
            error = self.spec.invalid_error
        if error is not None:
            status: Judgement = TRANSIENT if error == "temporary_failure" else REJECTED
            if status is TRANSIENT:
                stats.transient += 1
            else:
                stats.permanent += 1
            self._record(message_id, address, status, error, content)
            return status, error
        self._ids.add(key)
        stats.accepted += 1
        self._record(message_id, address, ACCEPTED, None, content)
        config = self._config
        if config.receipts_enabled and not (
            (config.no_receipt_share and random.random() < config.no_receipt_share)
            or (self._no_receipt_re and self._no_receipt_re.search(message_id))
        ):
            if config.failed_share and random.random() < config.failed_share:
                receipts.failed.append(message_id)
            else:
                receipts.delivered.append(message_id)
                if config.read_share and random.random() < config.read_share:
                    receipts.read.append(message_id)
        return ACCEPTED, self.provider_id(message_id)

    def _refuse(self, message_id: str, address: str, key: int) -> str | None:
        config = self._config
        if address in self._unknown or (self._unknown_re and self._unknown_re.search(address)):
            return self.spec.unknown_error
        if self._permanent_re and (
            self._permanent_re.search(message_id) or self._permanent_re.search(address)
        ):
            return "rejected"
        # Taken from the id's hash, so a rejected id stays rejected on every retry.
        if config.permanent_rate and ((key >> 20) & 0xFFFF) < config.permanent_rate * 65536:
            return "rejected"
        if self._transient_re and self._transient_re.search(message_id):
            tries = self._attempts.get(message_id, 0) + 1
            self._attempts[message_id] = tries
            if tries <= config.transient_attempts:
                return "temporary_failure"
        return None

    def schedule_receipts(self, receipts: ReceiptBatch, accepted_at: float | None = None) -> None:
        """Queue the receipts of one request's accepted messages."""
        config = self._config
        at = clock.time() if accepted_at is None else accepted_at
        if receipts.delivered:
            self.receipts.schedule(
                at + config.delivered_after_ms / 1000, ReceiptStatus.DELIVERED, receipts.delivered
            )
        if receipts.failed:
            self.receipts.schedule(
                at + config.delivered_after_ms / 1000, ReceiptStatus.FAILED, receipts.failed
            )
        if receipts.read:
            self.receipts.schedule(
                at + max(config.read_after_ms, config.delivered_after_ms) / 1000,
                ReceiptStatus.READ,
                receipts.read,
            )

    def latency(self) -> float:
        """Seconds the current request should take."""
        config = self._config
        millis = config.latency_ms
        if config.latency_jitter_ms:
            millis += random.uniform(-config.latency_jitter_ms, config.latency_jitter_ms)
        return max(0.0, millis) / 1000

    def _record(
        self,
        message_id: str,
        address: str,
        status: str,
        error: str | None,
        content: Any,
        duplicate: bool = False,
    ) -> None:
        keep = self._config.keep_messages
        if not keep:
            return
        recent = self._recent
        record = recent.get(message_id)
        if record is not None:
            record.submissions += 1
            if not duplicate:
                record.status, record.error, record.at = status, error, clock.time()
            return
        recent[message_id] = MessageRecord(
            message_id=message_id,
            address=address,
            status=status,
            at=clock.time(),
            error=error,
            provider_id=self.provider_id(message_id) if status == ACCEPTED else None,
            submissions=2 if duplicate else 1,
            content=content,
        )
        while len(recent) > keep:
            recent.popitem(last=False)

    def find(
        self, message_id: str | None = None, address: str | None = None, limit: int = 100
    ) -> list[MessageRecord]:
        """Recent messages by id or address (newest last), or the newest ``limit`` ones."""
        if message_id is not None:
            record = self._recent.get(message_id)
            return [record] if record is not None else []
        records = reversed(self._recent.values())
        found = [r for r in records if address is None or r.address == address]
        return found[:limit][::-1]

    def was_accepted(self, message_id: str) -> bool:
        """Whether the id was ever accepted (also past ``keep_messages``)."""
        return id_hash(message_id) in self._ids

    def snapshot(self) -> SimStats:
        """The counts now, with the receipts still to post."""
        self.stats.receipts_pending = self.receipts.pending
        self.stats.ids_memory_mb = round(self._ids.nbytes / 1e6, 1)
        return self.stats


def _compile(pattern: str | None) -> re.Pattern[str] | None:
    return re.compile(pattern) if pattern else None
