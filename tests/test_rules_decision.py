"""Combining the verdicts of several rules for one batch (pure)."""

from __future__ import annotations

import datetime as dt

import msgspec

from rules.decision import (
    NO_CONSENT,
    SEND,
    STOP_LIST,
    Decision,
    Hold,
    Send,
    Skip,
    combine,
    sendable,
)


def test_first_objecting_rule_gives_the_reason() -> None:
    # Given a batch of four clients and the verdicts of three rules in evaluation order
    until = dt.datetime(2025, 1, 1, 7, tzinfo=dt.UTC)
    stop = {1: STOP_LIST}
    consent = {1: NO_CONSENT, 2: NO_CONSENT}
    quiet = {2: Hold("quiet_hours", until), 3: Hold("quiet_hours", until)}
    # When they are combined
    decided = combine([1, 2, 3, 4], stop, consent, quiet)
    # Then each client carries the first objection, and the rest are sent
    assert decided == {1: STOP_LIST, 2: NO_CONSENT, 3: Hold("quiet_hours", until), 4: SEND}
    assert sendable(decided) == [4]


def test_decisions_cross_processes_as_tagged_json() -> None:
    # Given decisions of every kind
    decisions = [Send(), Skip("no_contact"), Hold("air_raid", None, "UA-30")]
    # When encoded and decoded (e.g. carried to the scheduler)
    data = msgspec.json.encode(decisions)
    # Then they come back equal
    assert msgspec.json.decode(data, type=list[Decision]) == decisions
