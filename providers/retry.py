"""Re-sending throttled and transiently failed messages with capped, jittered backoff.

Only the messages still failing are sent again, each with its own ``message_id``, which
the provider treats as an idempotency key: a message whose acceptance was lost on the
way back (a timeout) is answered ``accepted`` again rather than delivered twice.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence

import msgspec

from providers.base import Outbound, Outcome, Provider, ProviderUnavailable, SendResult

_FINAL = (Outcome.ACCEPTED, Outcome.PERMANENT)


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How hard ``send_with_retry`` tries before handing failures back to the caller."""

    max_attempts: int = 5  # sends of one message, the first included
    min_backoff: float = 0.1  # seconds before the first retry (before jitter)
    max_backoff: float = 5.0  # cap of the exponential backoff (a Retry-After may exceed it)
    max_elapsed: float = 30.0  # no retry starts later than this after the first send
    retry_unavailable: bool = True  # also retry when the whole provider is unreachable
    # Error codes (SendResult.error) that are transient but not worth retrying now,
    # like dramatiq's ``throws``: they go straight back to the caller.
    non_retryable: frozenset[str] = frozenset()


DEFAULT_POLICY = RetryPolicy()


def backoff(attempt: int, policy: RetryPolicy, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): capped, half-jittered."""
    ceiling = min(policy.max_backoff, policy.min_backoff * 2 ** (attempt - 1))
    # Equal jitter: never less than half the step, so retries still back off, yet
    # workers that failed together do not come back together.
    return ceiling / 2 + rng() * ceiling / 2


async def send_with_retry(
    provider: Provider,
    batch: Sequence[Outbound],
    policy: RetryPolicy = DEFAULT_POLICY,
    *,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: Callable[[], float] = random.random,
    should_stop: Callable[[], bool] | None = None,
) -> list[SendResult]:
    """Send ``batch`` (any length), retrying THROTTLED and TRANSIENT messages; one result each, in order.

    Messages still failing when attempts, time or ``should_stop`` (pause/stop of a
    campaign) run out come back TRANSIENT, keeping the provider's ``retry_after`` and
    error, so the caller can fall back or hold them. Raises ProviderUnavailable only
    when no attempt reached the provider at all, so a whole outage can be told apart
    from failing messages.
    """
    final: list[SendResult | None] = [None] * len(batch)
    last: dict[int, SendResult] = {}
    pending = list(range(len(batch)))
    started = clock()
    reached_provider = False
    unavailable: ProviderUnavailable | None = None
    attempt = 0
    while pending:
        attempt += 1
        for start in range(0, len(pending), provider.max_batch):
            chunk = pending[start : start + provider.max_batch]
            try:
                answered = await provider.send([batch[i] for i in chunk])
            except ProviderUnavailable as exc:
                unavailable = exc
                for i in chunk:
                    last[i] = SendResult(
                        batch[i].message_id, Outcome.TRANSIENT, error=f"unavailable: {exc}"
                    )
                continue
            reached_provider = True
            for i, result in zip(chunk, answered, strict=True):
                last[i] = result
        still: list[int] = []
        wait = 0.0
        for i in pending:
            result = last[i]
            if result.outcome in _FINAL or result.error in policy.non_retryable:
                final[i] = result
            else:
                still.append(i)
                if result.retry_after:
                    wait = max(wait, result.retry_after)
        pending = still
        if not pending or attempt >= policy.max_attempts:
            break
        if unavailable is not None and not policy.retry_unavailable:
            break
        # A Retry-After is honoured even above max_backoff; a little jitter on top keeps
        # throttled workers from returning in lockstep.
        delay = wait + rng() * policy.min_backoff if wait else backoff(attempt, policy, rng)
        if clock() - started + delay > policy.max_elapsed:
            break
        if should_stop is not None and should_stop():
            break
        await sleep(delay)
        unavailable = None
    if not reached_provider and unavailable is not None:
        raise unavailable
    for i in pending:
        final[i] = _as_transient(last[i])
    return final  # type: ignore[return-value]  # every slot is filled above


def _as_transient(result: SendResult) -> SendResult:
    if result.outcome is Outcome.TRANSIENT:
        return result
    return SendResult(
        result.message_id,
        Outcome.TRANSIENT,
        provider_id=result.provider_id,
        retry_after=result.retry_after,
        error=result.error or result.outcome.value,
    )
