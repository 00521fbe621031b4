"""Where the recipients of a batch are: their regions and those regions' time zones.

The send path (``rules.batch``) takes each recipient's region from the dispatcher's
recipient query: the region of their primary account (the oldest active one, else the
oldest), read in the same query as their addresses. The air-raid and quiet-hours checks
take a client -> regions mapping, so a client with several regions is held while any of
them is under an air-raid alert, and until the latest end of quiet hours among their
time zones. A client with no account has no region: the default time zone applies and
no alert holds them.

``load_client_regions`` gives every region a client has an account in that is not
closed (all of them if every one is closed); it is not on the send path, which uses
the primary account's region as said above.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg

from herald import clock

ClientRegions = dict[int, tuple[str, ...]]


async def load_time_zones(conn: asyncpg.Connection) -> dict[str, str]:
    """Region code -> IANA time zone name; a small table, load it once per process."""
    rows = await conn.fetch("SELECT code, time_zone FROM regions")
    return {r["code"]: r["time_zone"] for r in rows}


async def load_client_regions(conn: asyncpg.Connection, client_ids: Sequence[int]) -> ClientRegions:
    """Client -> its region codes (sorted), for a batch, in one query."""
    rows = await conn.fetch(
        "SELECT client_id, region_code, status <> 'closed' AS open FROM accounts "
        "WHERE client_id = ANY($1::bigint[])",
        list(client_ids),
    )
    open_: dict[int, set[str]] = {}
    closed: dict[int, set[str]] = {}
    for client_id, region, is_open in rows:
        (open_ if is_open else closed).setdefault(client_id, set()).add(region)
    return {c: tuple(sorted(open_.get(c) or closed[c])) for c in open_.keys() | closed.keys()}


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    """The ZoneInfo of ``name``; an unknown name falls back to the business time zone."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return clock.business_tz()


def time_zones_of(regions: Sequence[str], time_zones: Mapping[str, str]) -> frozenset[str]:
    """The distinct time zone names of ``regions`` (the business time zone when there are none)."""
    home = clock.business_tz().key
    if not regions:
        return frozenset((home,))
    return frozenset(time_zones.get(r, home) for r in regions)
