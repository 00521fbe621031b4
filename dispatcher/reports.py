"""Messaging reports (issue 16): per campaign and per trigger rule the funnel per channel
(audience, queued, sent, delivered, read, converted, failed, held, skipped), fallback
hops, cost and the opt-outs caused; messages per channel over time.

They read ``report_message_hourly`` / ``report_message_daily``, which :func:`fold` keeps
up to date from the deltas the triggers of migration 0070 append on every INSERT into
``message_events`` (outcomes), ``realtime_messages`` (a trigger rule's audience),
``campaigns`` (a campaign's audience at launch) and ``consent_log`` (opt-outs).

Definitions:

- ``audience``: a campaign's audience at launch (``campaigns.audience_size``); a trigger
  rule's messages made (including those the contact policy refused).
- ``queued`` / ``sent`` / ``delivered`` / ``read`` / ``failed`` / ``held`` /
  ``skipped`` / ``converted``: outcome events of that status (a message held and then
  sent counts in both); a conversion without a channel counts on the channel its message
  was sent on.
- ``fallback_hops``: messages sent on a later step of the channel chain (step > 0), per
  the channel they fell back to.
- ``cost``: sent x the channel's price now (``report_channel_prices``).
- ``opt_outs``: opt-outs (a consent set to false) on a channel whose client had been sent
  a message on that channel in the 7 days before; counted for the source of the latest.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Literal

import asyncpg
import msgspec

from crm.reports.periods import PeriodName, Spec, resolve
from herald.bounds import Id
from herald.errors import InvalidInput
from rules.consent import ConsentChannel

Source = Literal["campaign", "trigger", "operator"]
GroupBy = Literal["source", "source_channel", "channel", "hour", "day", "week", "none"]

FUNNEL = [
    "audience",
    "queued",
    "sent",
    "delivered",
    "read",
    "converted",
    "failed",
    "held",
    "skipped",
    "fallback_hops",
    "opt_outs",
]
RATES = ["delivered_percent", "read_percent", "converted_percent", "cost"]

_SUMS = ",\n".join(f"sum(r.{m})::bigint AS {m}" for m in FUNNEL)


class MessagingReportQuery(msgspec.Struct, forbid_unknown_fields=True):
    period: PeriodName | None = None
    from_: Annotated[dt.datetime, msgspec.Meta(tz=True)] | None = msgspec.field(
        default=None, name="from"
    )
    to: Annotated[dt.datetime, msgspec.Meta(tz=True)] | None = None
    group_by: GroupBy = "source"
    source: Source | None = None
    source_id: Id | None = None
    channel: ConsentChannel | None = None
    top: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    format: Literal["json", "csv"] = "json"


def _keys(group_by: str, hourly: bool) -> list[tuple[str, str]]:
    tz = "herald_business_tz()"
    t = "r.hour" if hourly else "r.day"
    day = f"(r.hour AT TIME ZONE {tz})::date" if hourly else "r.day"
    week = f"date_trunc('week', {day})::date"
    return {
        "source": [("source", "r.source"), ("source_id", "r.source_id")],
        "source_channel": [
            ("source", "r.source"),
            ("source_id", "r.source_id"),
            ("channel", "r.channel"),
        ],
        "channel": [("channel", "r.channel")],
        "hour": [("key", t)],
        "day": [("key", day)],
        "week": [("key", week)],
        "none": [],
    }[group_by]


def messaging_report(q: MessagingReportQuery) -> Spec:
    if q.source_id is not None and q.source is None:
        raise InvalidInput("source", "source_id needs source (campaign or trigger)")
    p = resolve(q.period, q.from_, q.to)
    spec = Spec("messaging", [], "", period=p)
    hourly = q.group_by == "hour" or not p.whole_days
    if hourly:
        where = [f"r.hour >= {spec.arg(p.start)}", f"r.hour < {spec.arg(p.end)}"]
        table = "report_message_hourly"
    else:
        where = [f"r.day >= {spec.arg(p.first_day)}", f"r.day < {spec.arg(p.end_day)}"]
        table = "report_message_daily"
    for column, value in (
        ("r.source", q.source),
        ("r.source_id", q.source_id),
        ("r.channel", q.channel),
    ):
        if value is not None:
            where.append(f"{column} = {spec.arg(value)}")
    keys = _keys(q.group_by, hourly)
    key_sql = "".join(f"{expr} AS {name}, " for name, expr in keys)
    names = [name for name, _ in keys]
    label = ""
    if "source" in names:
        label = """CASE g.source
                     WHEN 'campaign' THEN (SELECT c.name FROM campaigns c WHERE c.id = g.source_id)
                     WHEN 'trigger' THEN (SELECT t.name FROM trigger_rules t WHERE t.id = g.source_id)
                   END AS name, """
    order = "g.sent DESC" if q.top else (", ".join(f"g.{n}" for n in names) if names else "1")
    spec.sql = f"""
        SELECT {"".join(f"g.{n}, " for n in names)}{label}
               {", ".join("g." + m for m in FUNNEL)},
               round(100.0 * g.delivered / nullif(g.sent, 0), 2)::float8 AS delivered_percent,
               round(100.0 * g.read / nullif(g.sent, 0), 2)::float8 AS read_percent,
               round(100.0 * g.converted / nullif(g.sent, 0), 2)::float8 AS converted_percent,
               g.cost
        FROM (SELECT {key_sql}{_SUMS},
                     round(sum(r.sent * coalesce(pr.price, 0)), 2)::float8 AS cost
              FROM {table} r LEFT JOIN report_channel_prices pr ON pr.channel = r.channel
              WHERE {" AND ".join(where)}
              {"GROUP BY " + ", ".join(str(i + 1) for i in range(len(names))) if names else ""}) g
        ORDER BY {order} {f"LIMIT {int(q.top)}" if q.top else ""}
    """
    spec.columns = [*names, *(["name"] if label else []), *FUNNEL, *RATES]
    return spec


async def fold(conn: asyncpg.Connection) -> int:
    """Fold the pending deltas into the hourly and daily tables; the delta rows folded."""
    async with conn.transaction():
        return int(await conn.fetchval("SELECT report_message_fold()"))


async def rebuild(conn: asyncpg.Connection) -> int:
    """Recompute the message rollups from the stored outcomes (after a bulk load)."""
    async with conn.transaction():
        return int(await conn.fetchval("SELECT report_message_rebuild()"))


# -- channel prices ------------------------------------------------------------------------


class ChannelPrice(msgspec.Struct):
    channel: ConsentChannel
    price: Annotated[float, msgspec.Meta(ge=0, le=1_000_000)]
    currency: Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")] = "UAH"
    updated_at: dt.datetime | None = None
    updated_by: str | None = None


async def prices(conn: asyncpg.Connection) -> list[ChannelPrice]:
    rows = await conn.fetch(
        "SELECT channel, price::float8 AS price, currency, updated_at, updated_by FROM report_channel_prices "
        "ORDER BY channel"
    )
    return [ChannelPrice(**dict(r)) for r in rows]


async def set_price(conn: asyncpg.Connection, price: ChannelPrice, actor: str) -> ChannelPrice:
    row = await conn.fetchrow(
        """
        INSERT INTO report_channel_prices (channel, price, currency, updated_at, updated_by)
        VALUES ($1, $2, $3, herald_now(), $4)
        ON CONFLICT (channel) DO UPDATE SET price = excluded.price, currency = excluded.currency,
            updated_at = excluded.updated_at, updated_by = excluded.updated_by
        RETURNING channel, price::float8 AS price, currency, updated_at, updated_by
        """,
        price.channel,
        Decimal(str(price.price)),
        price.currency,
        actor,
    )
    return ChannelPrice(**dict(row))
