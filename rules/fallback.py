"""Fallback (IC-02): an ordered channel chain per message, as a pure state machine.

A message starts at step 0 of its chain. Each event about a step gives the next action:
try the next step, finish, or (for news about a step already left behind) wait. The
chain moves on when the channel is skipped (no contact, no consent), when the provider
rejects the message for good or transient retries run out, or when no delivery receipt
arrives within the step's ``receipt_timeout``. A stop-list skip ends the chain at once
(the client is blocked from the topic on every channel). The first delivered (or read)
channel ends the chain, even when its receipt arrives after the chain moved on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, cast

import msgspec

from herald.errors import InvalidInput
from providers.base import CHANNELS, Channel

DEFAULT_CHAIN: tuple[Channel, ...] = ("email", "viber", "sms")
DEFAULT_RECEIPT_TIMEOUT = 900.0
MIN_RECEIPT_TIMEOUT = 10.0
MAX_RECEIPT_TIMEOUT = 7 * 86400.0

SkipReason = Literal["no_contact", "no_consent", "stop_list"]


class Step(msgspec.Struct, frozen=True):
    channel: Channel
    receipt_timeout: float  # seconds


class Chain(msgspec.Struct, frozen=True):
    steps: tuple[Step, ...]

    @property
    def channels(self) -> tuple[Channel, ...]:
        return tuple(s.channel for s in self.steps)


# -- events: what happened to the message at step ``step`` --------------------------


class Skipped(msgspec.Struct, frozen=True, tag="skipped"):
    step: int
    reason: SkipReason


class PermanentFailure(msgspec.Struct, frozen=True, tag="permanent_failure"):
    step: int
    error: str | None = None


class RetriesExhausted(msgspec.Struct, frozen=True, tag="retries_exhausted"):
    step: int


class ReceiptTimeout(msgspec.Struct, frozen=True, tag="receipt_timeout"):
    step: int


class Delivered(msgspec.Struct, frozen=True, tag="delivered"):
    step: int


class Read(msgspec.Struct, frozen=True, tag="read"):
    step: int


Event = Skipped | PermanentFailure | RetriesExhausted | ReceiptTimeout | Delivered | Read

# -- actions --------------------------------------------------------------------------


class TryStep(msgspec.Struct, frozen=True, tag="try"):
    """Send on ``channel`` (step ``step``); expect a receipt within ``receipt_timeout`` s."""

    step: int
    channel: Channel
    receipt_timeout: float


class Finish(msgspec.Struct, frozen=True, tag="finish"):
    """The chain is over: ``delivered`` on ``channel``, ``blocked`` by a stop list, or
    ``exhausted`` with the last step's reason."""

    outcome: Literal["delivered", "blocked", "exhausted"]
    reason: str | None = None
    channel: Channel | None = None
    step: int | None = None


class Wait(msgspec.Struct, frozen=True, tag="wait"):
    """Nothing to do: the event concerns a step the chain has already left."""


Action = TryStep | Finish | Wait
WAIT = Wait()

_FAILURE_REASON = {
    PermanentFailure: "provider_failed",
    RetriesExhausted: "retries_exhausted",
    ReceiptTimeout: "receipt_timeout",
}


def parse_chain(
    channels: Sequence[str] = DEFAULT_CHAIN,
    receipt_timeouts: float | Sequence[float] = DEFAULT_RECEIPT_TIMEOUT,
    *,
    field: str = "channel_chain",
    timeout_field: str = "receipt_timeout_seconds",
) -> Chain:
    """A validated chain: non-empty, known channels, no repeats; InvalidInput names the field.

    ``receipt_timeouts`` is one value for every step or one per step (seconds).
    """
    if isinstance(channels, str):
        raise InvalidInput(field, "a list of channels is expected, not a string")
    if not channels:
        raise InvalidInput(
            field, f"at least one channel is required (e.g. {', '.join(DEFAULT_CHAIN)})"
        )
    if isinstance(receipt_timeouts, (int, float)):
        timeouts = [float(receipt_timeouts)] * len(channels)
        where = [timeout_field] * len(channels)
    else:
        timeouts = [float(t) for t in receipt_timeouts]
        where = [f"{timeout_field}[{i}]" for i in range(len(timeouts))]
        if len(timeouts) != len(channels):
            raise InvalidInput(timeout_field, f"one timeout per channel: {len(channels)} expected")
    seen: set[str] = set()
    steps = []
    for i, (channel, timeout) in enumerate(zip(channels, timeouts, strict=True)):
        if channel not in CHANNELS:
            raise InvalidInput(
                f"{field}[{i}]", f"unknown channel {channel!r}; one of {', '.join(CHANNELS)}"
            )
        if channel in seen:
            raise InvalidInput(f"{field}[{i}]", f"channel {channel!r} appears twice in the chain")
        if not MIN_RECEIPT_TIMEOUT <= timeout <= MAX_RECEIPT_TIMEOUT:
            raise InvalidInput(
                where[i],
                f"from {MIN_RECEIPT_TIMEOUT:.0f} s to {MAX_RECEIPT_TIMEOUT:.0f} s (7 days)",
            )
        seen.add(channel)
        steps.append(Step(channel, timeout))
    return Chain(tuple(steps))


def chain_of(channels: Sequence[str], receipt_timeout: float = DEFAULT_RECEIPT_TIMEOUT) -> Chain:
    """The chain of a stored campaign or message (validated when it was saved, with
    ``parse_chain`` or its API schema), one receipt timeout for every step."""
    timeout = float(receipt_timeout)
    return Chain(tuple(Step(cast(Channel, channel), timeout) for channel in channels))


def first_action(chain: Chain) -> TryStep:
    """Where every message starts: step 0."""
    return _try(chain, 0)


def next_action(chain: Chain, current: int | None, event: Event) -> Action:
    """The action after ``event``; ``current`` is the step being tried, None once finished."""
    if not 0 <= event.step < len(chain.steps):
        raise ValueError(f"event for step {event.step} of a chain of {len(chain.steps)} steps")
    if current is not None and event.step > current:
        raise ValueError(f"event for step {event.step} but step {current} is the one being tried")
    if current is None:
        return WAIT
    if isinstance(event, (Delivered, Read)):
        return Finish("delivered", None, chain.steps[event.step].channel, event.step)
    if event.step < current:
        return WAIT
    if isinstance(event, Skipped):
        if event.reason == "stop_list":
            return Finish("blocked", "stop_list", None, event.step)
        reason: str = event.reason
    else:
        reason = _FAILURE_REASON[type(event)]
    if current + 1 < len(chain.steps):
        return _try(chain, current + 1)
    return Finish("exhausted", reason, chain.steps[current].channel, current)


def next_step(chain: Chain, current: int, event: Event) -> int | None:
    """The step to try after ``event`` at the step being tried, or None: the chain is over
    (delivered, blocked or exhausted). What the worker and the receipt handling ask."""
    action = next_action(chain, current, event)
    return action.step if isinstance(action, TryStep) else None


def _try(chain: Chain, step: int) -> TryStep:
    s = chain.steps[step]
    return TryStep(step, s.channel, s.receipt_timeout)
