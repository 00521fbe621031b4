"""Quiet hours: pure release times (midnight, weekdays, DST in Europe/Kyiv) and the window store."""

from __future__ import annotations

import datetime as dt

import asyncpg
import pytest

from crm import audit as audit_journal
from herald import audit
from herald.errors import InvalidInput, NotFound
from rules import quiet_hours
from rules.decision import Hold
from rules.quiet_hours import QuietWindow, WindowSpec, release_at

UTC = dt.UTC
KYIV = "Europe/Kyiv"
NIGHT = QuietWindow(start=dt.time(21), end=dt.time(9))
ADMIN = audit.Actor(login="admin1", id=None)


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    "now, expected",
    [
        ("2025-01-15 18:59", None),  # 20:59 in Kyiv (UTC+2): still allowed
        ("2025-01-15 19:00", "2025-01-16 07:00"),  # 21:00: quiet until 09:00 next morning
        ("2025-01-15 23:30", "2025-01-16 07:00"),  # 01:30 after midnight: same night
        ("2025-01-16 06:59", "2025-01-16 07:00"),  # 08:59: one minute left
        ("2025-01-16 07:00", None),  # 09:00 sharp: the window has ended
        ("2025-07-15 06:30", None),  # summer (UTC+3): 09:30 local
        ("2025-07-15 05:30", "2025-07-15 06:00"),  # summer: 08:30 local, until 09:00 = 06:00Z
    ],
)
def test_window_crossing_midnight(now: str, expected: str | None) -> None:
    # Given the window 21:00-09:00 every day
    # When a message is due at `now` for a recipient in Kyiv
    # Then it may go now (None) or is held until the window's end in UTC
    assert release_at(utc(now), KYIV, [NIGHT]) == (utc(expected) if expected else None)


def test_spring_forward_night_ends_at_nine_local() -> None:
    # Given 21:00-09:00 over the night of 29-30 March 2025 (01:00Z: clocks 03:00 -> 04:00)
    # When a message is due at 22:00 on the 29th (UTC+2)
    # Then it is held until 09:00 on the 30th, which is 06:00Z (UTC+3): 10 hours, not 11
    assert release_at(utc("2025-03-29 20:00"), KYIV, [NIGHT]) == utc("2025-03-30 06:00")


def test_fall_back_night_ends_at_nine_local() -> None:
    # Given 21:00-09:00 over the night of 25-26 October 2025 (01:00Z: clocks 04:00 -> 03:00)
    # When a message is due at 22:00 on the 25th (UTC+3)
    # Then it is held until 09:00 on the 26th, which is 07:00Z (UTC+2): 12 hours
    assert release_at(utc("2025-10-25 19:00"), KYIV, [NIGHT]) == utc("2025-10-26 07:00")


def test_boundary_in_the_skipped_hour_is_the_jump() -> None:
    # Given a window 02:30-03:30 and the night 03:00 does not exist (30 March 2025)
    window = [QuietWindow(start=dt.time(2, 30), end=dt.time(3, 30))]
    # When a message is due at 02:45 local (00:45Z)
    # Then the window ends when clocks jump to 04:00 (01:00Z), not half an hour later
    assert release_at(utc("2025-03-30 00:45"), KYIV, window) == utc("2025-03-30 01:00")
    # And at 04:10 local it may go
    assert release_at(utc("2025-03-30 01:10"), KYIV, window) is None


def test_boundary_in_the_repeated_hour_covers_both_passes() -> None:
    # Given a window 02:30-03:30 and the night 03:00-04:00 happens twice (26 October 2025)
    window = [QuietWindow(start=dt.time(2, 30), end=dt.time(3, 30))]
    # When a message is due at 03:10 local on the first pass (00:10Z, UTC+3)
    # Then it is held until 03:30 on the second pass (01:30Z, UTC+2)
    assert release_at(utc("2025-10-26 00:10"), KYIV, window) == utc("2025-10-26 01:30")
    # And at 03:10 on the second pass (01:10Z) it is still quiet
    assert release_at(utc("2025-10-26 01:10"), KYIV, window) == utc("2025-10-26 01:30")


def test_weekday_windows_start_on_their_day() -> None:
    # Given a Friday-night window 18:00-10:00 (Friday = 5) and the everyday night window
    friday = QuietWindow(start=dt.time(18), end=dt.time(10), weekdays=frozenset({5}))
    # When due on Friday 17 January 2025 at 19:00 local, Then held until Saturday 10:00
    assert release_at(utc("2025-01-17 17:00"), KYIV, [friday, NIGHT]) == utc("2025-01-18 08:00")
    # When due on Saturday at 19:00 local, Then the Friday window does not apply
    assert release_at(utc("2025-01-18 17:00"), KYIV, [friday, NIGHT]) is None
    # When due on Thursday at 19:00, Then not quiet either
    assert release_at(utc("2025-01-16 17:00"), KYIV, [friday]) is None


def test_adjacent_windows_are_followed_to_the_last_end() -> None:
    # Given 21:00-00:00 and 00:00-09:00 configured as two windows
    evening = QuietWindow(start=dt.time(21), end=dt.time(0))
    morning = QuietWindow(start=dt.time(0), end=dt.time(9))
    # When due at 22:00, Then the release is 09:00, not midnight
    assert release_at(utc("2025-01-15 20:00"), KYIV, [evening, morning]) == utc("2025-01-16 07:00")


def test_other_time_zone_and_inactive_windows() -> None:
    # Given the night window evaluated for a recipient in London (UTC+0 in winter)
    # When it is 22:00 in Kyiv but 20:00 in London, Then London may still receive
    assert release_at(utc("2025-01-15 20:00"), "Europe/London", [NIGHT]) is None
    assert release_at(utc("2025-01-15 21:00"), "Europe/London", [NIGHT]) == utc("2025-01-16 09:00")
    # And a disabled window holds no one
    off = QuietWindow(start=dt.time(21), end=dt.time(9), is_active=False)
    assert release_at(utc("2025-01-15 20:00"), KYIV, [off]) is None
    with pytest.raises(ValueError):
        release_at(dt.datetime(2025, 1, 15, 20), KYIV, [NIGHT])


def test_batch_check_by_channel_zone_and_urgency() -> None:
    # Given the night window for SMS and Viber only, a Kyiv client, a London client and a
    # client with no known region
    window = QuietWindow(start=dt.time(21), end=dt.time(9), channels=frozenset({"sms", "viber"}))
    regions = {1: ("UA-30",), 2: ("GB-LND",)}
    zones = {"UA-30": KYIV, "GB-LND": "Europe/London"}
    now = utc("2025-01-15 20:00")  # 22:00 in Kyiv, 20:00 in London
    # When an SMS batch is checked
    held = quiet_hours.check(now, [1, 2, 3], regions, zones, [window], channel="sms")
    # Then Kyiv and the default-zone client are held until 07:00Z, London goes now
    assert held == {
        1: Hold("quiet_hours", utc("2025-01-16 07:00")),
        3: Hold("quiet_hours", utc("2025-01-16 07:00")),
    }
    # And e-mail or an urgent message is not held
    assert quiet_hours.check(now, [1, 2, 3], regions, zones, [window], channel="email") == {}
    assert (
        quiet_hours.check(now, [1, 2, 3], regions, zones, [window], channel="sms", urgent=True)
        == {}
    )


def test_client_in_two_zones_waits_for_the_later_end() -> None:
    regions = {1: ("UA-30", "GB-LND")}
    zones = {"UA-30": KYIV, "GB-LND": "Europe/London"}
    held = quiet_hours.check(utc("2025-01-15 21:30"), [1], regions, zones, [NIGHT], channel="sms")
    assert held == {1: Hold("quiet_hours", utc("2025-01-16 09:00"))}


async def test_window_store_is_journalled(app_conn: asyncpg.Connection) -> None:
    # Given an admin creates the night window for SMS
    spec = WindowSpec(name="Ніч", start=dt.time(21), end=dt.time(9), channels=["sms"])
    window = await quiet_hours.create_window(app_conn, ADMIN, spec)
    assert window.id is not None
    assert window.weekdays == frozenset(range(1, 8)) and window.channels == frozenset({"sms"})
    # When they move its end to 08:00 and then switch it off
    await quiet_hours.update_window(
        app_conn,
        ADMIN,
        window.id,
        WindowSpec(name="Ніч", start=dt.time(21), end=dt.time(8), channels=["sms"]),
    )
    await quiet_hours.update_window(
        app_conn,
        ADMIN,
        window.id,
        WindowSpec(
            name="Ніч", start=dt.time(21), end=dt.time(8), channels=["sms"], is_active=False
        ),
    )
    # Then the worker loads no active window, the admin list still shows it
    assert await quiet_hours.load_windows(app_conn) == []
    [listed] = await quiet_hours.list_windows(app_conn)
    assert listed.end == dt.time(8) and listed.is_active is False
    # And the journal has one entry per changed field
    history = await audit_journal.history(
        app_conn, "quiet_hours_window", str(window.id), limit=10, pii_visible=True
    )
    assert [(h.action, h.field, h.old_value, h.new_value) for h in history][:2] == [
        ("update", "is_active", True, False),
        ("update", "end", "09:00:00", "08:00:00"),
    ]
    # When deleted, Then it is gone and a second delete is NotFound
    await quiet_hours.delete_window(app_conn, ADMIN, window.id)
    assert await quiet_hours.list_windows(app_conn) == []
    with pytest.raises(NotFound):
        await quiet_hours.delete_window(app_conn, ADMIN, window.id)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"name": ""}, "name"),
        ({"end": dt.time(21)}, "end"),
        ({"weekdays": [0, 1]}, "weekdays"),
        ({"weekdays": []}, "weekdays"),
        ({"channels": ["fax"]}, "channels"),
        ({"channels": []}, "channels"),
        ({"start": dt.time(21, tzinfo=UTC)}, "start"),
    ],
)
async def test_bad_windows_name_the_field(
    app_conn: asyncpg.Connection, changes: dict[str, object], field: str
) -> None:
    values: dict[str, object] = {"name": "n", "start": dt.time(21), "end": dt.time(9)} | changes
    with pytest.raises(InvalidInput) as caught:
        await quiet_hours.create_window(app_conn, ADMIN, WindowSpec(**values))  # type: ignore[arg-type]  # a bad value on purpose
    assert caught.value.field == field
