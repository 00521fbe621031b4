"""Rate limits (IC-05): token buckets shared by every worker process, taken in bulk.

A limit of L per minute is a bucket refilled at L/60 tokens a second (per hour: L/3600)
holding at most ``BURST_SECONDS`` (2 s) worth of tokens, and never less than one: the
burst is max(1, ceil(L/30)) for a minute's limit, max(1, ceil(L/1800)) for an hour's. So a
limit is spread over its period, not spent in its first seconds (a bucket of a whole
minute's tokens did that: 300/min went out at once, then trickled), and any window of W
seconds grants at most burst + rate * W: 300/min is at most 10 + 300 in any 60 s. A send
takes one token from every applicable bucket: its channel's, its provider's and its
campaign's, each per minute and per hour, whichever are configured. ``take(buckets, n)``
grants up to n at once, the same number from every bucket, atomically; with too few
tokens it grants what all buckets can give and says how long until the next token
(``retry_after``).

A unit of work (a batch of hundreds of recipients) usually needs more tokens than a
bucket ever holds. ``pace`` splits it: each grant is sent at once (a token is never kept
waiting for the rest of the unit, so units sharing a bucket never starve each other),
the next tokens are waited for up to a bound, and what is left is held by the caller
until ``release_times`` says its tokens should be due.

Backends: ``RedisRateLimiter`` (one Lua call per ``take``, clock from Redis ``TIME``
so hosts need not agree on time) and ``StubRateLimiter`` (in memory, injectable clock)
for unit tests. Channel and provider limits are configured by administrators in the
``rate_limits`` table; campaign limits are stored with campaigns and passed in.
"""

from __future__ import annotations

import abc
import datetime as dt
import math
import re
import time
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import msgspec
import redis.asyncio as aioredis

from herald import audit
from herald.errors import InvalidInput, NotFound
from providers.base import CHANNELS

MAX_PER_MINUTE = 10_000_000
MAX_PER_HOUR = 100_000_000
# A bucket holds this many seconds' worth of its rate (its burst), at least one token.
BURST_SECONDS = 2.0


class Limits(msgspec.Struct, frozen=True):
    """A scope's limits; None: no limit for that period."""

    per_minute: int | None = None
    per_hour: int | None = None


class Bucket(msgspec.Struct, frozen=True):
    key: str
    capacity: int
    rate: float  # tokens per second


class Grant(msgspec.Struct, frozen=True):
    """How many tokens were taken, and when asking again can give more (seconds; 0 if all given)."""

    granted: int
    retry_after: float


def burst(rate: float) -> int:
    """A bucket's capacity for ``rate`` tokens a second: BURST_SECONDS' worth, at least 1."""
    return max(1, math.ceil(rate * BURST_SECONDS - 1e-9))


def buckets(namespace: str, scope: str, limits: Limits) -> list[Bucket]:
    """The buckets of one scope (``channel.sms``, ``provider.sms.acme``, ``campaign.42``)."""
    found = []
    if limits.per_minute is not None:
        rate = limits.per_minute / 60
        found.append(Bucket(f"{namespace}:rl:{scope}:minute", burst(rate), rate))
    if limits.per_hour is not None:
        rate = limits.per_hour / 3600
        found.append(Bucket(f"{namespace}:rl:{scope}:hour", burst(rate), rate))
    return found


class RateLimiter(abc.ABC):
    """Takes tokens from several buckets at once, atomically across processes."""

    async def take(self, buckets: Sequence[Bucket], n: int) -> Grant:
        """Take up to ``n`` tokens from every bucket of ``buckets``: the same number from each."""
        if n <= 0:
            return Grant(0, 0.0)
        if not buckets:
            return Grant(n, 0.0)
        return await self._take(buckets, n)

    @abc.abstractmethod
    async def _take(self, buckets: Sequence[Bucket], n: int) -> Grant: ...


# KEYS: bucket hashes {t: tokens, at: seconds}. ARGV: n, then (capacity, rate) per key.
# Missing key: a full bucket. Keys expire once they would be full again.
_TAKE = """
local n = tonumber(ARGV[1])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local have, grant = {}, n
for i = 1, #KEYS do
  local cap, rate = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local state = redis.call('HMGET', KEYS[i], 't', 'at')
  local tokens = cap
  if state[1] then
    local elapsed = math.max(0, now - tonumber(state[2]))
    tokens = math.min(cap, tonumber(state[1]) + elapsed * rate)
  end
  have[i] = tokens
  grant = math.min(grant, math.floor(tokens))
end
grant = math.max(grant, 0)
local wait = 0
for i = 1, #KEYS do
  local cap, rate = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local left = have[i] - grant
  redis.call('HSET', KEYS[i], 't', string.format('%.6f', left), 'at', string.format('%.6f', now))
  redis.call('PEXPIRE', KEYS[i], math.ceil((cap - left) / rate * 1000) + 1000)
  if grant < n and left < 1 then
    wait = math.max(wait, (1 - left) / rate)
  end
end
return {grant, string.format('%.6f', wait)}
"""


class RedisRateLimiter(RateLimiter):
    """Buckets in Redis, one Lua call per ``take`` (about 80 us, whatever ``n`` is)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._script = redis.register_script(_TAKE)

    async def _take(self, buckets: Sequence[Bucket], n: int) -> Grant:
        args: list[int | float | str] = [n]
        for b in buckets:
            args += [b.capacity, repr(b.rate)]
        granted, wait = await self._script(keys=[b.key for b in buckets], args=args)
        return Grant(int(granted), float(wait))


class StubRateLimiter(RateLimiter):
    """The same buckets in memory, with a clock the test controls; for pure unit tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._state: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    async def _take(self, buckets: Sequence[Bucket], n: int) -> Grant:
        now = self._clock()
        have = []
        for b in buckets:
            tokens, at = self._state.get(b.key, (float(b.capacity), now))
            have.append(min(b.capacity, tokens + max(0.0, now - at) * b.rate))
        granted = max(0, min(n, *(math.floor(t) for t in have)))
        wait = 0.0
        for b, tokens in zip(buckets, have, strict=True):
            left = tokens - granted
            self._state[b.key] = (left, now)
            if granted < n and left < 1:
                wait = max(wait, (1 - left) / b.rate)
        return Grant(granted, wait)


# -- pacing a unit of work ------------------------------------------------------------


class Paced(msgspec.Struct):
    """How pacing a unit ended: ``granted`` of its sends went, ``retry_after`` seconds
    until the next token when it stopped short (0 when all were granted)."""

    granted: int = 0
    retry_after: float = 0.0


async def pace(
    limiter: RateLimiter,
    found: Sequence[Bucket],
    n: int,
    *,
    send: Callable[[int], Awaitable[bool]],
    max_wait: float,
    monotonic: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
) -> Paced:
    """Take tokens for ``n`` sends as they come and ``send(k)`` each grant of k at once.

    Stops when all are granted, when the next tokens would come more than ``max_wait``
    seconds after the start, or when ``send`` returns False (paused, stopped). The caller
    holds the rest (``release_times``). The clock and the sleep are the caller's, so a
    test runs minutes of pacing without waiting."""
    done = Paced()
    if n <= 0:
        return done
    deadline = monotonic() + max_wait
    while done.granted < n:
        grant = await limiter.take(found, n - done.granted)
        done.retry_after = grant.retry_after if done.granted + grant.granted < n else 0.0
        if grant.granted:
            done.granted += grant.granted
            if not await send(grant.granted):
                return done
            continue  # the provider call took time: tokens may be there already
        wait = max(grant.retry_after, 0.001)
        if monotonic() + wait > deadline:
            return done
        await sleep(wait)
    return done


def release_times(found: Sequence[Bucket], left: int, retry_after: float) -> list[float]:
    """Seconds from now after which each of ``left`` held sends should find a token: the
    first at ``retry_after``, the others one token of the slowest bucket apart (an
    estimate: other units share the buckets, and a send released early waits again)."""
    if left <= 0:
        return []
    rate = min((b.rate for b in found), default=0.0)
    step = 1.0 / rate if rate > 0 else 1.0
    return [max(retry_after, 0.0) + i * step for i in range(left)]


# -- configuration (admin) ------------------------------------------------------------


class RateLimit(msgspec.Struct, frozen=True):
    """A configured limit of a channel (provider None: all its providers) or of one provider."""

    id: int
    channel: str
    provider: str | None
    per_minute: int | None
    per_hour: int | None
    updated_by: str
    updated_at: dt.datetime

    @property
    def limits(self) -> Limits:
        return Limits(self.per_minute, self.per_hour)


_PROVIDER = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
_COLUMNS = "id, channel, provider, per_minute, per_hour, updated_by, updated_at"


def buckets_for_send(
    namespace: str,
    configured: Sequence[RateLimit],
    *,
    channel: str,
    provider: str | None = None,
    campaign_id: int | None = None,
    campaign_limits: Limits | None = None,
) -> list[Bucket]:
    """Every bucket a send on ``channel`` through ``provider`` for ``campaign_id`` takes from."""
    found: list[Bucket] = []
    for limit in configured:
        if limit.channel != channel:
            continue
        if limit.provider is None:
            found += buckets(namespace, f"channel.{channel}", limit.limits)
        elif limit.provider == provider:
            found += buckets(namespace, f"provider.{channel}.{provider}", limit.limits)
    if campaign_id is not None and campaign_limits is not None:
        found += buckets(namespace, f"campaign.{campaign_id}", campaign_limits)
    return found


def _validate(
    channel: str, provider: str | None, per_minute: int | None, per_hour: int | None
) -> None:
    if channel not in CHANNELS:
        raise InvalidInput("channel", f"one of {', '.join(CHANNELS)}")
    if provider is not None and not _PROVIDER.match(provider):
        raise InvalidInput("provider", "lower-case latin letters, digits, '.', '_' or '-'")
    if per_minute is None and per_hour is None:
        raise InvalidInput("per_minute", "set per_minute, per_hour or both")
    for name, value, top in (
        ("per_minute", per_minute, MAX_PER_MINUTE),
        ("per_hour", per_hour, MAX_PER_HOUR),
    ):
        if value is not None and not (isinstance(value, int) and 1 <= value <= top):
            raise InvalidInput(name, f"an integer from 1 to {top}")


def _journal(limit: RateLimit | None) -> dict[str, int | None] | None:
    return None if limit is None else {"per_minute": limit.per_minute, "per_hour": limit.per_hour}


def _entity_id(channel: str, provider: str | None) -> str:
    return channel if provider is None else f"{channel}:{provider}"


async def set_limit(
    conn: asyncpg.Connection,
    actor: audit.Actor,
    *,
    channel: str,
    provider: str | None = None,
    per_minute: int | None = None,
    per_hour: int | None = None,
) -> RateLimit:
    """Create or replace the limits of a channel or provider; journalled."""
    _validate(channel, provider, per_minute, per_hour)
    async with conn.transaction():
        old = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM rate_limits WHERE channel = $1 AND provider IS NOT DISTINCT FROM $2"
            " FOR UPDATE",
            channel,
            provider,
        )
        row = await conn.fetchrow(
            f"""
            INSERT INTO rate_limits (channel, provider, per_minute, per_hour, updated_by)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (channel, provider) DO UPDATE
            SET per_minute = EXCLUDED.per_minute, per_hour = EXCLUDED.per_hour,
                updated_by = EXCLUDED.updated_by, updated_at = herald_now()
            RETURNING {_COLUMNS}
            """,
            channel,
            provider,
            per_minute,
            per_hour,
            actor.login,
        )
        limit = RateLimit(**dict(row))
        entity = _entity_id(channel, provider)
        if old is None:
            changes = [audit.Change("rate_limit", entity, "create", None, None, _journal(limit))]
        else:
            changes = audit.field_changes(
                "rate_limit", entity, _journal(RateLimit(**dict(old))) or {}, _journal(limit) or {}
            )
        await audit.record(conn, actor, changes)
    return limit


async def remove_limit(
    conn: asyncpg.Connection, actor: audit.Actor, *, channel: str, provider: str | None = None
) -> None:
    """Drop the limits of a channel or provider (unlimited from then on); journalled."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"DELETE FROM rate_limits WHERE channel = $1 AND provider IS NOT DISTINCT FROM $2"
            f" RETURNING {_COLUMNS}",
            channel,
            provider,
        )
        if row is None:
            raise NotFound(f"no rate limit for {_entity_id(channel, provider)}")
        await audit.record(
            conn,
            actor,
            [
                audit.Change(
                    "rate_limit",
                    _entity_id(channel, provider),
                    "delete",
                    None,
                    _journal(RateLimit(**dict(row))),
                    None,
                )
            ],
        )


async def list_limits(conn: asyncpg.Connection) -> list[RateLimit]:
    """Every configured limit, channel-wide first; workers load it and refresh it now and then."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM rate_limits ORDER BY channel, provider NULLS FIRST"
    )
    return [RateLimit(**dict(r)) for r in rows]
