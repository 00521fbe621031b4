"""Fallback chain: a pure state machine over the channel chain (no I/O)."""

from __future__ import annotations

import pytest

from herald.errors import InvalidInput
from rules.fallback import (
    DEFAULT_CHAIN,
    WAIT,
    Delivered,
    Finish,
    PermanentFailure,
    Read,
    ReceiptTimeout,
    RetriesExhausted,
    Skipped,
    TryStep,
    first_action,
    next_action,
    parse_chain,
)


def test_default_chain_is_email_viber_sms() -> None:
    # Given no configuration
    chain = parse_chain()
    # Then the chain is e-mail, Viber, SMS, each with the default receipt timeout
    assert chain.channels == DEFAULT_CHAIN == ("email", "viber", "sms")
    assert first_action(chain) == TryStep(0, "email", 900.0)


@pytest.mark.parametrize(
    "channels, field",
    [
        ([], "channel_chain"),
        (["email", "fax"], "channel_chain[1]"),
        (["sms", "viber", "sms"], "channel_chain[2]"),
        ("sms", "channel_chain"),
    ],
)
def test_invalid_chains_name_the_field(channels: list[str], field: str) -> None:
    # Given an empty chain, an unknown channel, a repeated channel or a bare string
    # When it is validated
    with pytest.raises(InvalidInput) as caught:
        parse_chain(channels)
    # Then the error names the offending field
    assert caught.value.field == field


def test_receipt_timeouts_are_validated_per_step() -> None:
    # Given a chain with one timeout per step
    chain = parse_chain(["viber", "sms"], [60, 600])
    assert [s.receipt_timeout for s in chain.steps] == [60.0, 600.0]
    # When a timeout is out of range or the counts differ, Then the field is named
    with pytest.raises(InvalidInput) as caught:
        parse_chain(["viber", "sms"], [60, 1])
    assert caught.value.field == "receipt_timeout_seconds[1]"
    with pytest.raises(InvalidInput) as caught:
        parse_chain(["viber", "sms"], [60])
    assert caught.value.field == "receipt_timeout_seconds"
    with pytest.raises(InvalidInput) as caught:
        parse_chain(["viber"], 8 * 86400)
    assert caught.value.field == "receipt_timeout_seconds"


@pytest.mark.parametrize(
    "event, reason",
    [
        (Skipped(0, "no_contact"), "no_contact"),
        (Skipped(0, "no_consent"), "no_consent"),
        (PermanentFailure(0, "invalid address"), "provider_failed"),
        (RetriesExhausted(0), "retries_exhausted"),
        (ReceiptTimeout(0), "receipt_timeout"),
    ],
)
def test_each_failure_moves_to_the_next_channel(event, reason: str) -> None:
    # Given the default chain at its first step (e-mail)
    chain = parse_chain()
    # When the step fails in any way
    # Then Viber is tried next with its receipt timeout
    assert next_action(chain, 0, event) == TryStep(1, "viber", 900.0)
    # And at the last step the chain is exhausted with that reason
    last = type(event)(2, *([event.reason] if isinstance(event, Skipped) else []))
    assert next_action(chain, 2, last) == Finish("exhausted", reason, "sms", 2)


def test_stop_list_ends_the_chain() -> None:
    # Given a message at its first step
    chain = parse_chain()
    # When the client is on a stop list for the topic
    # Then no other channel is tried
    assert next_action(chain, 0, Skipped(0, "stop_list")) == Finish("blocked", "stop_list", None, 0)


@pytest.mark.parametrize("event_type", [Delivered, Read])
def test_first_delivered_channel_ends_the_chain(event_type) -> None:
    # Given the chain at Viber
    chain = parse_chain()
    # When Viber reports delivery (or a read, which implies it)
    # Then the chain finishes, delivered on Viber
    assert next_action(chain, 1, event_type(1)) == Finish("delivered", None, "viber", 1)


def test_late_receipt_of_an_earlier_step_ends_the_chain() -> None:
    # Given e-mail timed out and the chain moved on to Viber
    chain = parse_chain()
    assert next_action(chain, 0, ReceiptTimeout(0)) == TryStep(1, "viber", 900.0)
    # When the e-mail delivery receipt arrives late
    # Then the chain finishes, delivered on e-mail (no SMS is tried after Viber)
    assert next_action(chain, 1, Delivered(0)) == Finish("delivered", None, "email", 0)


def test_stale_failures_and_events_after_the_end_are_ignored() -> None:
    # Given the chain has moved on to step 1
    chain = parse_chain()
    # When a failure of step 0 arrives late, Then there is nothing to do
    assert next_action(chain, 1, PermanentFailure(0)) is WAIT
    # When anything arrives after the chain finished, Then there is nothing to do
    assert next_action(chain, None, Read(2)) is WAIT


def test_events_from_the_future_are_a_caller_bug() -> None:
    chain = parse_chain(["sms"])
    with pytest.raises(ValueError):
        next_action(chain, 0, Delivered(1))
    with pytest.raises(ValueError):
        next_action(parse_chain(), 0, Delivered(1))


def test_custom_chain_email_plus_viber() -> None:
    # Given the custom chain e-mail -> Viber (no SMS)
    chain = parse_chain(["email", "viber"], 300)
    # When both fail
    first = next_action(chain, 0, Skipped(0, "no_contact"))
    assert first == TryStep(1, "viber", 300.0)
    # Then the chain is exhausted after Viber
    assert next_action(chain, 1, ReceiptTimeout(1)) == Finish(
        "exhausted", "receipt_timeout", "viber", 1
    )
