"""Air-raid alerts (IC-09): messages to a region under alert are held until it is lifted.

PostgreSQL holds the truth: ``air_raid_states`` (current state and a per-region
version) and ``air_raid_alerts`` (one row per alert period), both changed by
``switch_alert`` with an audit entry in the same transaction. Workers never query it on
the hot path: ``AlertMirror`` keeps the set of active regions in Redis and a worker
reads it once per batch (``active_regions``: one round trip).

The mirror is written after the commit by one Lua script that applies a region's state
only if its version is not older than the one mirrored, so two switches racing to
Redis cannot leave the older state behind, and ``sync`` (a full rebuild from
PostgreSQL, safe at any time) repairs a mirror that missed a write or lost its data.
Until the first sync or apply, ``active_regions`` raises ``MirrorNotReady``: an empty
Redis never means "no alerts".

How holders learn an alert was lifted: every change of the active set increments a
counter (``{ns}:air_raid:version``) and is published on the pub/sub channel
``{ns}:air_raid:changes`` as JSON ``{"region", "active", "version", "mirror_version"}``.
The scheduler subscribes (``subscribe()``) to release at once, and also polls
``active_regions()`` every few seconds as a backstop for missed messages, releasing
every ``air_raid`` hold whose region is no longer in the set. Released messages go
through the rules again (quiet hours may hold them next).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Literal

import asyncpg
import msgspec
import redis.asyncio as aioredis

from herald import audit
from herald.errors import HeraldError, InvalidInput
from rules.decision import Hold

Source = Literal["admin", "integration"]


class MirrorNotReady(HeraldError):
    """The Redis mirror of alerts was never filled (or was lost): call ``AlertMirror.sync``."""

    code = "air-raid-mirror-not-ready"


class AlertState(msgspec.Struct, frozen=True):
    region_code: str
    active: bool
    version: int
    changed_at: dt.datetime
    changed_by: str
    source: str


class AlertPeriod(msgspec.Struct, frozen=True):
    id: int
    region_code: str
    started_at: dt.datetime
    started_by: str
    start_source: str
    ended_at: dt.datetime | None
    ended_by: str | None
    end_source: str | None


class AlertSnapshot(msgspec.Struct, frozen=True):
    """The regions under alert as the mirror saw them; ``version`` grows with every change."""

    version: int
    regions: frozenset[str]


class AlertChange(msgspec.Struct, frozen=True):
    """One pub/sub message: a region's alert switched on or off."""

    region: str
    active: bool
    version: int
    mirror_version: int


def check(
    alerts: AlertSnapshot,
    client_ids: Iterable[int],
    client_regions: Mapping[int, Sequence[str]],
    *,
    urgent: bool = False,
) -> dict[int, Hold]:
    """The batch check: clients in a region under alert, held until it is lifted."""
    if urgent or not alerts.regions:
        return {}
    active = alerts.regions
    held: dict[int, Hold] = {}
    for client_id in client_ids:
        for region in client_regions.get(client_id, ()):
            if region in active:
                held[client_id] = Hold("air_raid", None, region)
                break
    return held


def lifted(before: AlertSnapshot, after: AlertSnapshot) -> frozenset[str]:
    """Regions whose alert ended between two snapshots."""
    return before.regions - after.regions


# -- store ----------------------------------------------------------------------------

_STATE = "region_code, active, version, changed_at, changed_by, source"
_PERIOD = "id, region_code, started_at, started_by, start_source, ended_at, ended_by, end_source"


async def switch_alert(
    conn: asyncpg.Connection,
    actor: audit.Actor,
    region_code: str,
    active: bool,
    *,
    source: Source = "admin",
) -> tuple[AlertState, bool]:
    """Switch a region's alert on or off (journalled); returns the state and whether it changed.

    Switching to the current state is a no-op. Mirror the returned state to Redis after
    the transaction commits (``set_alert`` does both).
    """
    if source not in ("admin", "integration"):
        raise InvalidInput("source", "one of admin, integration")
    async with conn.transaction():
        if not await conn.fetchval("SELECT true FROM regions WHERE code = $1", region_code):
            raise InvalidInput("region_code", f"unknown region {region_code!r}")
        await conn.execute(
            """
            INSERT INTO air_raid_states (region_code, active, version, changed_by, source)
            VALUES ($1, false, 0, $2, $3) ON CONFLICT (region_code) DO NOTHING
            """,
            region_code,
            actor.login,
            source,
        )
        old = await conn.fetchrow(
            f"SELECT {_STATE} FROM air_raid_states WHERE region_code = $1 FOR UPDATE", region_code
        )
        if old["active"] == active:
            return AlertState(**dict(old)), False
        row = await conn.fetchrow(
            f"""
            UPDATE air_raid_states
            SET active = $2, version = version + 1, changed_at = herald_now(), changed_by = $3, source = $4
            WHERE region_code = $1 RETURNING {_STATE}
            """,
            region_code,
            active,
            actor.login,
            source,
        )
        if active:
            await conn.execute(
                """
                INSERT INTO air_raid_alerts (region_code, started_at, started_by, start_source)
                VALUES ($1, herald_now(), $2, $3)
                """,
                region_code,
                actor.login,
                source,
            )
        else:
            await conn.execute(
                """
                UPDATE air_raid_alerts SET ended_at = herald_now(), ended_by = $2, end_source = $3
                WHERE region_code = $1 AND ended_at IS NULL
                """,
                region_code,
                actor.login,
                source,
            )
        await audit.record(
            conn,
            actor,
            [
                audit.Change(
                    "air_raid_alert", region_code, "update", "active", old["active"], active
                )
            ],
        )
    return AlertState(**dict(row)), True


async def set_alert(
    conn: asyncpg.Connection,
    mirror: AlertMirror,
    actor: audit.Actor,
    region_code: str,
    active: bool,
    *,
    source: Source = "admin",
) -> AlertState:
    """Switch an alert, commit, then mirror it to Redis: what the API and integrations call."""
    if conn.is_in_transaction():
        raise RuntimeError("set_alert commits before mirroring; call it outside a transaction")
    state, _ = await switch_alert(conn, actor, region_code, active, source=source)
    # Applied even when nothing changed: it also repairs a mirror that missed a write.
    await mirror.apply([state])
    return state


async def states(conn: asyncpg.Connection) -> list[AlertState]:
    """The state of every region ever switched, by region code."""
    rows = await conn.fetch(f"SELECT {_STATE} FROM air_raid_states ORDER BY region_code")
    return [AlertState(**dict(r)) for r in rows]


class RegionAlert(msgspec.Struct):
    """A region and its alert; ``version`` etc. are null for a region never switched."""

    region_code: str
    name_uk: str
    name_en: str
    active: bool
    version: int | None
    changed_at: dt.datetime | None
    changed_by: str | None
    source: str | None


async def region_alerts(conn: asyncpg.Connection) -> list[RegionAlert]:
    """Every region with its alert state (off for a region never switched), by region code."""
    rows = await conn.fetch(
        """
        SELECT r.code AS region_code, r.name_uk, r.name_en, coalesce(s.active, false) AS active,
               s.version, s.changed_at, s.changed_by, s.source
        FROM regions r LEFT JOIN air_raid_states s ON s.region_code = r.code
        ORDER BY r.code
        """
    )
    return [RegionAlert(**dict(r)) for r in rows]


async def region_exists(conn: asyncpg.Connection, code: str) -> bool:
    """Whether ``code`` is a region's code."""
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM regions WHERE code = $1)", code))


async def history(
    conn: asyncpg.Connection,
    *,
    region_code: str | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[AlertPeriod]:
    """Alert periods, newest first; keyset paging by id."""
    rows = await conn.fetch(
        f"""
        SELECT {_PERIOD} FROM air_raid_alerts
        WHERE ($1::text IS NULL OR region_code = $1) AND ($2::bigint IS NULL OR id < $2)
        ORDER BY id DESC LIMIT $3
        """,
        region_code,
        before_id,
        limit,
    )
    return [AlertPeriod(**dict(r)) for r in rows]


# -- Redis mirror ---------------------------------------------------------------------

# KEYS: versions hash, active set, counter. ARGV: pub/sub channel, full ("1": also drop
# regions not listed), then (region, version, active "1"/"0") triples.
_APPLY = """
local listed, events = {}, {}
for i = 3, #ARGV, 3 do
  local region, version, active = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2] == '1'
  listed[region] = true
  local known = tonumber(redis.call('HGET', KEYS[1], region) or '-1')
  if version >= known then
    redis.call('HSET', KEYS[1], region, version)
    local changed
    if active then
      changed = redis.call('SADD', KEYS[2], region)
    else
      changed = redis.call('SREM', KEYS[2], region)
    end
    if changed == 1 then
      table.insert(events, {region, active, version})
    end
  end
end
if ARGV[2] == '1' then
  for _, region in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    if not listed[region] then
      redis.call('SREM', KEYS[2], region)
      redis.call('HDEL', KEYS[1], region)
      table.insert(events, {region, false, -1})
    end
  end
end
redis.call('SETNX', KEYS[3], 0)
local mirror_version = tonumber(redis.call('GET', KEYS[3]))
if #events > 0 then
  mirror_version = redis.call('INCR', KEYS[3])
  for _, e in ipairs(events) do
    redis.call('PUBLISH', ARGV[1], cjson.encode(
      {region = e[1], active = e[2], version = e[3], mirror_version = mirror_version}))
  end
end
return mirror_version
"""

_change_decoder = msgspec.json.Decoder(AlertChange)


class AlertMirror:
    """The set of regions under alert, mirrored in Redis under ``{namespace}:air_raid:*``."""

    def __init__(self, redis: aioredis.Redis, namespace: str) -> None:
        self._redis = redis
        prefix = f"{namespace}:air_raid"
        self.versions_key = f"{prefix}:versions"
        self.active_key = f"{prefix}:active"
        self.counter_key = f"{prefix}:version"
        self.channel = f"{prefix}:changes"
        self._apply = redis.register_script(_APPLY)

    async def apply(self, changes: Sequence[AlertState], *, full: bool = False) -> int:
        """Mirror region states (older versions are ignored); returns the mirror version."""
        args: list[str | int] = [self.channel, "1" if full else "0"]
        for s in changes:
            args += [s.region_code, s.version, "1" if s.active else "0"]
        return int(
            await self._apply(
                keys=[self.versions_key, self.active_key, self.counter_key], args=args
            )
        )

    async def sync(self, conn: asyncpg.Connection) -> AlertSnapshot:
        """Rebuild the mirror from PostgreSQL: at start-up and periodically (cheap, idempotent)."""
        await self.apply(await states(conn), full=True)
        return await self.active_regions()

    async def active_regions(self) -> AlertSnapshot:
        """The regions under alert now: one Redis round trip, made once per batch."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(self.counter_key)  # type: ignore[unused-awaitable]  # queued, run by execute()
            pipe.smembers(self.active_key)  # type: ignore[unused-awaitable]  # queued
            version, members = await pipe.execute()
        if version is None:
            raise MirrorNotReady(
                "the air-raid alert mirror in Redis is empty; sync it from PostgreSQL"
            )
        return AlertSnapshot(
            int(version), frozenset(m.decode() if isinstance(m, bytes) else m for m in members)
        )

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[AsyncIterator[AlertChange]]:
        """Subscribe now; iterate the yielded stream for alert switches as they are mirrored.

        Pub/sub delivers only while subscribed: pair it with polling ``active_regions``.
        """
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(self.channel)
        try:
            yield _decoded(pubsub)
        finally:
            await pubsub.unsubscribe(self.channel)
            await pubsub.aclose()


async def _decoded(pubsub: aioredis.client.PubSub) -> AsyncIterator[AlertChange]:
    async for message in pubsub.listen():
        if message["type"] == "message":
            yield _change_decoder.decode(message["data"])
