"""The batch API every send path asks (rules.batch): the rules in order, the walk down a chain."""

from __future__ import annotations

import datetime as dt

import msgspec

from rules import batch, fallback
from rules.air_raid import AlertSnapshot
from rules.consent import Consents
from rules.decision import NO_CONSENT, NO_CONTACT, SEND, STOP_LIST, Hold, Skip
from rules.quiet_hours import QuietWindow

NIGHT = QuietWindow(start=dt.time(21), end=dt.time(9), channels=frozenset({"sms"}))
KYIV_NIGHT = dt.datetime(2025, 1, 15, 20, tzinfo=dt.UTC)  # 22:00 in Kyiv
MORNING = dt.datetime(2025, 1, 16, 7, tzinfo=dt.UTC)  # 09:00 in Kyiv: the window's end
ZONES = {"UA-30": "Europe/Kyiv", "UA-46": "Europe/Kyiv"}


class Person(msgspec.Struct, frozen=True):
    client_id: int
    phone: str | None = "+380501234567"
    email: str | None = "client@example.com"
    region_code: str | None = "UA-46"


def _facts(
    *,
    stopped: dict[int, Skip] | None = None,
    opted_out: dict[tuple[int, str], bool] | None = None,
    alerts: frozenset[str] = frozenset(),
    urgent: bool = False,
    now: dt.datetime = KYIV_NIGHT,
) -> batch.Facts:
    return batch.Facts(
        topic="debt",
        urgent=urgent,
        now=now,
        stopped=stopped or {},
        consents=Consents("debt", False, opted_out or {}),
        alerts=AlertSnapshot(1, alerts),
        windows=[NIGHT],
        time_zones=ZONES,
    )


def test_the_first_rule_in_order_gives_the_reason() -> None:
    # Given five clients, each with one more objection than the next: a stop list, no
    # phone, no consent on SMS, an alert in their region, quiet hours on SMS
    people = {
        1: Person(1, phone=None, region_code="UA-30"),
        2: Person(2, phone=None, region_code="UA-30"),
        3: Person(3, region_code="UA-30"),
        4: Person(4, region_code="UA-30"),
        5: Person(5),
    }
    facts = _facts(
        stopped={1: STOP_LIST},
        opted_out={(1, "sms"): False, (2, "sms"): False, (3, "sms"): False},
        alerts=frozenset({"UA-30"}),
    )
    # When the batch is decided on SMS
    decided = batch.Rules(facts, people).decide([1, 2, 3, 4, 5], "sms")
    # Then each carries the first objection in the documented order
    assert batch.ORDER == ("stop_lists", "contact", "consent", "air_raid", "quiet_hours")
    assert decided == {
        1: STOP_LIST,
        2: NO_CONTACT,
        3: NO_CONSENT,
        4: Hold("air_raid", None, "UA-30"),
        5: Hold("quiet_hours", MORNING),
    }
    # And an urgent message is held by neither alert nor quiet hours, on a channel
    # without windows nobody is held by quiet hours
    urgent = batch.Rules(_facts(alerts=frozenset({"UA-30"}), urgent=True), people)
    assert urgent.decide([4, 5], "sms") == {4: SEND, 5: SEND}
    assert batch.Rules(facts, people).decide([5], "viber") == {5: SEND}


def test_the_walk_moves_skips_on_and_stops_at_a_send_a_hold_or_a_stop_list() -> None:
    # Given a chain e-mail, Viber, SMS and clients: stop-listed, without e-mail, without
    # any address, opted out of Viber into SMS quiet hours, and one sendable at once
    chain = fallback.chain_of(("email", "viber", "sms"), 600)
    people = {
        1: Person(1),
        2: Person(2, email=None),
        3: Person(3, email=None, phone=None),
        4: Person(4, email=None),
        5: Person(5),
    }
    facts = _facts(stopped={1: STOP_LIST}, opted_out={(4, "viber"): False})
    # When the batch walks from step 0
    walked = batch.Rules(facts, people).walk(dict.fromkeys(people, 0), chain)
    # Then each client's moves say where it stops, in the order of the stage
    assert list(walked) == [1, 2, 3, 4, 5]
    assert walked == {
        1: [(0, STOP_LIST)],  # the chain ends at once
        2: [(0, NO_CONTACT), (1, SEND)],
        3: [(0, NO_CONTACT), (1, NO_CONTACT), (2, NO_CONTACT)],  # exhausted
        4: [(0, NO_CONTACT), (1, NO_CONSENT), (2, Hold("quiet_hours", MORNING))],
        5: [(0, SEND)],
    }
    # And a walk may start further down the chain (a failed step's fallback)
    assert batch.Rules(facts, people).walk({5: 2}, chain) == {
        5: [(2, Hold("quiet_hours", MORNING))]
    }


def test_a_redelivered_walk_keeps_what_was_settled() -> None:
    # Given a batch redelivered after a crash: client 1 was skipped at step 0 before,
    # client 2's step-0 message was receipted but never recorded as sent, client 3's was
    # sent, and client 4 is stop-listed now but its step 0 was already recorded
    chain = fallback.chain_of(("viber", "sms"))
    people = {c: Person(c) for c in (1, 2, 3, 4)}
    settled = {(1, 0): "skipped", (2, 0): "receipted", (3, 0): "sent", (4, 0): "sent"}
    facts = _facts(stopped={4: STOP_LIST}, now=MORNING)
    # When it walks again
    walked = batch.Rules(facts, people).walk(dict.fromkeys(people, 0), chain, settled)
    # Then the settled steps are not decided again, and nothing is recorded twice
    assert walked == {1: [(1, SEND)], 2: [(0, batch.RECOVERED)], 3: [], 4: []}


def test_the_preview_decides_every_channel_of_a_chain() -> None:
    # Given a client without e-mail, at night
    people = {7: Person(7, email=None)}
    # When the operator's check previews the chain
    shown = batch.Rules(_facts(), people).preview(7, ["email", "sms", "viber"])
    # Then every channel has its own decision
    assert shown == [NO_CONTACT, Hold("quiet_hours", MORNING), SEND]


def test_the_fallback_machine_names_the_next_step_of_a_stored_chain() -> None:
    # Given a stored chain of two channels
    chain = fallback.chain_of(["viber", "sms"], 60)
    assert chain.channels == ("viber", "sms") and chain.steps[1].receipt_timeout == 60.0
    # Then a failure or a timeout moves on to the next step, and at the end nothing follows
    assert fallback.next_step(chain, 0, fallback.PermanentFailure(0)) == 1
    assert fallback.next_step(chain, 0, fallback.ReceiptTimeout(0)) == 1
    assert fallback.next_step(chain, 1, fallback.ReceiptTimeout(1)) is None
    # And a stop list or a delivery ends the chain
    assert fallback.next_step(chain, 0, fallback.Skipped(0, "stop_list")) is None
    assert fallback.next_step(chain, 0, fallback.Delivered(0)) is None
