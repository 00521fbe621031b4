"""Meters of an account and their readings (issue 4, point 5).

A reading comes from the client (cabinet, app, IVR, chatbot), an operator, or the gas
distribution operator through billing (source ``gdo``). One reading per meter, day,
source and replacement flag. A manual reading lower than the one before it is refused
unless it is the first reading of a replaced meter (``is_replacement``); readings of a
meter are entered one at a time (the meter row is locked), so two concurrent entries
cannot both pass the check.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import asyncpg
import msgspec

from herald import clock
from herald.audit import Actor, Change, record
from herald.errors import Conflict, InvalidInput, NotFound

SOURCES = ("cabinet", "app", "ivr", "chatbot", "operator", "gdo")
ReadingSource = Literal["cabinet", "app", "ivr", "chatbot", "operator", "gdo"]
SizeClass = Literal["G1.6", "G2.5", "G4", "G6", "G10"]
MAX_VALUE = Decimal("999999999.999")


class Reading(msgspec.Struct, frozen=True):
    """One reading: ``at`` is when it reached Herald (GDO readings: their read date)."""

    id: int
    meter_id: int
    value: Decimal
    read_on: dt.date
    source: str
    is_replacement: bool
    at: dt.datetime
    entered_by: int | None
    entered_by_login: str | None


class Meter(msgspec.Struct, frozen=True):
    id: int
    account_id: int
    serial_number: str
    model: str
    size_class: str
    installed_at: dt.date
    verified_until: dt.date | None
    status: str
    created_at: dt.datetime
    latest_reading: Reading | None = None


class MeterSpec(msgspec.Struct, frozen=True):
    """A meter installed on an account (from billing's equipment or the operator)."""

    serial_number: str
    model: str
    size_class: SizeClass
    installed_at: dt.date
    verified_until: dt.date | None = None


_READING_COLUMNS = (
    "id, meter_id, value, read_on, source, is_replacement, at, entered_by, entered_by_login"
)
_METER_COLUMNS = (
    "id, account_id, serial_number, model, size_class, installed_at, "
    "verified_until, status, created_at"
)


def _reading(row: Mapping[str, Any]) -> Reading:
    return Reading(
        row["id"],
        row["meter_id"],
        row["value"],
        row["read_on"],
        row["source"],
        row["is_replacement"],
        row["at"],
        row["entered_by"],
        row["entered_by_login"],
    )


def _meter(row: Mapping[str, Any], latest: Reading | None) -> Meter:
    return Meter(
        row["id"],
        row["account_id"],
        row["serial_number"],
        row["model"],
        row["size_class"],
        row["installed_at"],
        row["verified_until"],
        row["status"],
        row["created_at"],
        latest,
    )


def today_in_kyiv(now: dt.datetime | None = None) -> dt.date:
    """The calendar date of the client (Ukraine): a reading may not be dated after it."""
    return (now or clock.now()).astimezone(clock.business_tz()).date()


async def latest_readings(conn: asyncpg.Connection, meter_ids: Sequence[int]) -> dict[int, Reading]:
    """The latest reading of each meter (by read date; a replacement wins its day)."""
    if not meter_ids:
        return {}
    # One backward probe of the (meter, day) index per meter and yearly partition.
    rows = await conn.fetch(
        f"""
        SELECT r.* FROM unnest($1::bigint[]) AS m(id)
        CROSS JOIN LATERAL (
            SELECT {_READING_COLUMNS} FROM meter_readings
            WHERE meter_id = m.id
            ORDER BY read_on DESC, is_replacement DESC, source DESC
            LIMIT 1) r
        """,
        list(set(meter_ids)),
    )
    return {r["meter_id"]: _reading(r) for r in rows}


async def _account_exists(conn: asyncpg.Connection, account_id: int) -> None:
    if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM accounts WHERE id = $1)", account_id):
        raise NotFound(f"no account {account_id}")


async def list_meters(conn: asyncpg.Connection, account_id: int) -> list[Meter]:
    """An account's meters, active first, each with its latest reading."""
    await _account_exists(conn, account_id)
    rows = await conn.fetch(
        f"SELECT {_METER_COLUMNS} FROM meters WHERE account_id = $1 "
        "ORDER BY status = 'active' DESC, id",
        account_id,
    )
    latest = await latest_readings(conn, [r["id"] for r in rows])
    return [_meter(r, latest.get(r["id"])) for r in rows]


async def get_meter(conn: asyncpg.Connection, meter_id: int) -> Meter:
    row = await conn.fetchrow(f"SELECT {_METER_COLUMNS} FROM meters WHERE id = $1", meter_id)
    if row is None:
        raise NotFound(f"no meter {meter_id}")
    latest = await latest_readings(conn, [meter_id])
    return _meter(row, latest.get(meter_id))


async def add_meter(
    conn: asyncpg.Connection, actor: Actor, account_id: int, spec: MeterSpec
) -> Meter:
    """Install a meter on an account (journalled); an active meter's serial may not repeat."""
    if spec.verified_until is not None and spec.verified_until < spec.installed_at:
        raise InvalidInput("verified_until", "must not be before installed_at")
    async with conn.transaction():
        await _account_exists(conn, account_id)
        clash = await conn.fetchval(
            "SELECT id FROM meters WHERE account_id = $1 AND serial_number = $2 "
            "AND status = 'active'",
            account_id,
            spec.serial_number,
        )
        if clash is not None:
            raise Conflict(
                f"meter {clash} with serial {spec.serial_number!r} is already "
                f"active on account {account_id}"
            )
        row = await conn.fetchrow(
            f"""
            INSERT INTO meters (account_id, serial_number, model, size_class, installed_at,
                                verified_until)
            VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_METER_COLUMNS}
            """,
            account_id,
            spec.serial_number,
            spec.model,
            spec.size_class,
            spec.installed_at,
            spec.verified_until,
        )
        await record(
            conn,
            actor,
            [
                Change(
                    "meter",
                    str(row["id"]),
                    "create",
                    None,
                    None,
                    {"account_id": account_id, **msgspec.to_builtins(spec)},
                )
            ],
        )
    return _meter(row, None)


async def remove_meter(conn: asyncpg.Connection, actor: Actor, meter_id: int) -> Meter:
    """Mark a meter removed (its readings stay); removing it again changes nothing."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"SELECT {_METER_COLUMNS} FROM meters WHERE id = $1 FOR UPDATE", meter_id
        )
        if row is None:
            raise NotFound(f"no meter {meter_id}")
        if row["status"] != "removed":
            row = await conn.fetchrow(
                f"UPDATE meters SET status = 'removed' WHERE id = $1 RETURNING {_METER_COLUMNS}",
                meter_id,
            )
            await record(
                conn,
                actor,
                [Change("meter", str(meter_id), "update", "status", "active", "removed")],
            )
    latest = await latest_readings(conn, [meter_id])
    return _meter(row, latest.get(meter_id))


def check_value(value: Decimal, field: str = "value") -> Decimal:
    """A meter value: finite, not negative, at most 9 integer digits and 3 decimals."""
    if not value.is_finite() or value < 0 or value > MAX_VALUE:
        raise InvalidInput(field, f"must be between 0 and {MAX_VALUE}, got {value}")
    if value != value.quantize(Decimal("0.001")):
        raise InvalidInput(field, f"at most 3 decimal places, got {value}")
    return value


async def enter_reading(
    conn: asyncpg.Connection,
    actor: Actor,
    meter_id: int,
    *,
    value: Decimal,
    read_on: dt.date,
    source: ReadingSource,
    is_replacement: bool = False,
    today: dt.date | None = None,
) -> tuple[Reading, bool]:
    """Record a reading; return it and whether it is new.

    Posting the same reading again (same meter, day, source, flag and value) returns the
    stored one; a different value for that slot is a conflict. The value must not be
    below the reading before it nor above the one after it, unless it starts a
    replaced meter.
    """
    check_value(value)
    today = today or today_in_kyiv()
    if read_on > today:
        raise InvalidInput(
            "read_on", f"a reading cannot be dated in the future ({read_on} > {today})"
        )
    async with conn.transaction():
        meter = await conn.fetchrow("SELECT status FROM meters WHERE id = $1 FOR UPDATE", meter_id)
        if meter is None:
            raise NotFound(f"no meter {meter_id}")
        if meter["status"] == "removed":
            raise Conflict(f"meter {meter_id} is removed; readings go to its replacement")
        same = await conn.fetchrow(
            f"SELECT {_READING_COLUMNS} FROM meter_readings WHERE meter_id = $1 AND read_on = $2 "
            "AND is_replacement = $3 AND source = $4",
            meter_id,
            read_on,
            is_replacement,
            source,
        )
        if same is not None:
            if same["value"] == value:
                return _reading(same), False
            raise Conflict(
                f"a {source} reading of {read_on} is already recorded for meter "
                f"{meter_id} with value {same['value']}"
            )
        before = await conn.fetchrow(
            "SELECT value, read_on FROM meter_readings WHERE meter_id = $1 AND read_on <= $2 "
            "ORDER BY read_on DESC, is_replacement DESC, value DESC LIMIT 1",
            meter_id,
            read_on,
        )
        if before is not None and not is_replacement and value < before["value"]:
            raise InvalidInput(
                "value",
                f"{value} is lower than the last reading "
                f"{before['value']} of {before['read_on']}; if the meter "
                "was replaced, send is_replacement: true",
            )
        after = await conn.fetchrow(
            "SELECT value, read_on FROM meter_readings WHERE meter_id = $1 AND read_on > $2 "
            "AND NOT is_replacement ORDER BY read_on, value LIMIT 1",
            meter_id,
            read_on,
        )
        replaced_after = await conn.fetchval(
            "SELECT min(read_on) FROM meter_readings WHERE meter_id = $1 AND read_on > $2 "
            "AND is_replacement",
            meter_id,
            read_on,
        )
        if (
            after is not None
            and value > after["value"]
            and (replaced_after is None or after["read_on"] <= replaced_after)
        ):
            raise InvalidInput(
                "value",
                f"{value} is higher than the later reading {after['value']} of {after['read_on']}",
            )
        try:
            row = await conn.fetchrow(
                f"""
                INSERT INTO meter_readings (meter_id, read_on, value, source, is_replacement,
                                            entered_by, entered_by_login)
                VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_READING_COLUMNS}
                """,
                meter_id,
                read_on,
                value,
                source,
                is_replacement,
                actor.id,
                actor.login,
            )
        except asyncpg.UniqueViolationError:  # billing's import of the same day, just now
            raise Conflict(
                f"a {source} reading of {read_on} was just recorded for meter {meter_id}"
            ) from None
        await record(
            conn,
            actor,
            [
                Change(
                    "meter",
                    str(meter_id),
                    "add_reading",
                    "reading",
                    None,
                    {
                        "reading_id": row["id"],
                        "value": value,
                        "read_on": read_on,
                        "source": source,
                        "is_replacement": is_replacement,
                    },
                )
            ],
        )
    return _reading(row), True


async def list_readings(
    conn: asyncpg.Connection,
    meter_id: int,
    *,
    limit: int,
    before: tuple[dt.date, int] | None = None,
) -> list[Reading]:
    """A meter's readings, newest read date first; ``before`` is the (read_on, id) cursor."""
    if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM meters WHERE id = $1)", meter_id):
        raise NotFound(f"no meter {meter_id}")
    rows = await conn.fetch(
        f"""
        SELECT {_READING_COLUMNS} FROM meter_readings
        WHERE meter_id = $1
          AND ($2::date IS NULL OR read_on < $2 OR (read_on = $2 AND id < $3))
          AND ($2::date IS NULL OR read_on <= $2)
        ORDER BY read_on DESC, id DESC
        LIMIT $4
        """,
        meter_id,
        before[0] if before else None,
        before[1] if before else None,
        limit,
    )
    return [_reading(r) for r in rows]


def _billing_item(item: Mapping[str, Any]) -> tuple[str, Decimal, dt.date] | None:
    """(serial, value, read_on) of one of billing's GDO readings, or None if unusable."""
    try:
        serial = str(item["meter_serial"]).strip()
        value = Decimal(str(item["value"]))
        read_on = item["read_on"]
        if isinstance(read_on, str):
            read_on = dt.date.fromisoformat(read_on)
        if isinstance(read_on, dt.datetime):
            read_on = read_on.date()
        if not isinstance(read_on, dt.date) or not serial or read_on > today_in_kyiv():
            return None
        check_value(value)
    except (KeyError, TypeError, ValueError, InvalidOperation, InvalidInput):
        return None
    return serial, value, read_on


async def record_billing_readings(
    conn: asyncpg.Connection, account_id: int, items: list[dict[str, Any]]
) -> int:
    """Store billing's GDO readings of an account; return how many were new.

    Idempotent per (meter, read_on, source): billing sends its whole recent history on
    every refresh. Serials unknown on the account and malformed items are skipped
    (billing is the authority on them; there is nothing the card could do).
    """
    parsed = [p for p in map(_billing_item, items) if p is not None]
    if not parsed:
        return 0
    status = await conn.execute(
        """
        INSERT INTO meter_readings (meter_id, read_on, value, source, at)
        SELECT m.id, i.read_on, i.value, 'gdo', i.read_on::timestamp AT TIME ZONE herald_business_tz()
        FROM unnest($2::text[], $3::numeric[], $4::date[]) AS i(serial, value, read_on)
        CROSS JOIN LATERAL (
            SELECT id FROM meters
            WHERE account_id = $1 AND serial_number = i.serial
            ORDER BY status = 'active' DESC, id DESC LIMIT 1) m
        ORDER BY m.id, i.read_on
        ON CONFLICT (meter_id, read_on, is_replacement, source) DO NOTHING
        """,
        account_id,
        [p[0] for p in parsed],
        [p[1] for p in parsed],
        [p[2] for p in parsed],
    )
    return int(status.split()[-1])
