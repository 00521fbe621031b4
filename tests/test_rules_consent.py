"""Consent per client, channel and topic: pure decision and its store against PostgreSQL."""

from __future__ import annotations

import asyncpg
import pytest

from crm import audit
from crm.errors import InvalidInput
from rules import consent
from rules.consent import Consents, allowed, load_consents, record_consent
from rules.decision import NO_CONSENT

OPERATOR = audit.Actor(login="operator1", id=None)


async def _clients(conn: asyncpg.Connection, n: int) -> list[int]:
    rows = await conn.fetch(
        "INSERT INTO clients (last_name, first_name) SELECT 'Тест', 'Клієнт' || g "
        "FROM generate_series(1, $1) g RETURNING id", n)
    return [r["id"] for r in rows]


def test_explicit_choice_overrides_the_topic_default() -> None:
    # Given a service topic (no opt-in needed) and a marketing topic (opt-in needed)
    service = Consents("debt", False, {(1, "sms"): False})
    marketing = Consents("marketing", True, {(1, "email"): True})
    # Then a missing row follows the topic default, an explicit row wins
    assert allowed(service, 2, "sms") is True
    assert allowed(service, 1, "sms") is False
    assert allowed(service, 1, "viber") is True
    assert allowed(marketing, 1, "email") is True
    assert allowed(marketing, 1, "sms") is False
    assert allowed(marketing, 2, "email") is False


def test_check_lists_only_the_clients_without_consent() -> None:
    marketing = Consents("marketing", True, {(1, "email"): True, (2, "email"): False})
    assert consent.check(marketing, [1, 2, 3], "email") == {2: NO_CONSENT, 3: NO_CONSENT}
    assert consent.check(Consents("debt", False, {}), [1, 2, 3], "sms") == {}


async def test_load_reads_a_batch_in_one_query(app_conn: asyncpg.Connection) -> None:
    # Given three clients: one opted out of debt SMS, one opted in to debt SMS, one silent
    a, b, c = await _clients(app_conn, 3)
    await app_conn.executemany(
        "INSERT INTO consents (client_id, channel, topic, opted_in, source) VALUES ($1, $2, $3, $4, 'cabinet')",
        [(a, "sms", "debt", False), (b, "sms", "debt", True), (a, "email", "debt", False),
         (a, "sms", "marketing", True)])
    # When the consents of the batch for debt on SMS and Viber are loaded
    loaded = await load_consents(app_conn, [a, b, c], ["sms", "viber"], "debt")
    # Then only debt rows on those channels are there, with the topic default
    assert loaded == Consents("debt", False, {(a, "sms"): False, (b, "sms"): True})
    assert consent.check(loaded, [a, b, c], "sms") == {a: NO_CONSENT}
    assert consent.check(loaded, [a, b, c], "viber") == {}


async def test_marketing_needs_an_opt_in(app_conn: asyncpg.Connection) -> None:
    # Given marketing requires opt-in and one of two clients opted in on Viber
    a, b = await _clients(app_conn, 2)
    await record_consent(app_conn, OPERATOR, client_id=a, channel="viber", topic="marketing",
                         opted_in=True, source="app")
    # When checked at send time
    loaded = await load_consents(app_conn, [a, b], ["viber"], "marketing")
    # Then the silent client is skipped for lack of consent
    assert consent.check(loaded, [a, b], "viber") == {b: NO_CONSENT}


async def test_opt_out_mid_campaign_is_honoured(app_conn: asyncpg.Connection) -> None:
    # Given a client allowed debt SMS when the first batch was checked
    (a,) = await _clients(app_conn, 1)
    before = await load_consents(app_conn, [a], ["sms"], "debt")
    assert consent.check(before, [a], "sms") == {}
    # When they reply STOP before the next batch
    await record_consent(app_conn, OPERATOR, client_id=a, channel="sms", topic="debt",
                         opted_in=False, source="sms_stop")
    # Then the next batch's check, reading at send time, skips them
    after = await load_consents(app_conn, [a], ["sms"], "debt")
    assert consent.check(after, [a], "sms") == {a: NO_CONSENT}


async def test_changes_are_journalled(app_conn: asyncpg.Connection) -> None:
    # Given a client
    (a,) = await _clients(app_conn, 1)
    # When they opt in, opt in again (no change) and opt out
    assert await record_consent(app_conn, OPERATOR, client_id=a, channel="email",
                                topic="marketing", opted_in=True, source="cabinet") is None
    assert await record_consent(app_conn, OPERATOR, client_id=a, channel="email",
                                topic="marketing", opted_in=True, source="cabinet") is True
    assert await record_consent(app_conn, OPERATOR, client_id=a, channel="email",
                                topic="marketing", opted_in=False, source="email_unsubscribe") is True
    # Then the journal holds two entries, newest first, by the operator
    entries = await audit.history(app_conn, "consent", f"{a}:email:marketing", limit=10)
    assert [(e.action, e.old_value, e.new_value) for e in entries] == [
        ("update", True, False), ("create", None, True)]
    assert {e.actor_login for e in entries} == {"operator1"}


@pytest.mark.parametrize("change, field", [
    ({"source": "fax"}, "source"),
    ({"channel": "pigeon"}, "channel"),
    ({"topic": "nope"}, "topic"),
    ({"client_id": 999_999_999}, "client_id"),
])
async def test_bad_input_names_the_field(app_conn: asyncpg.Connection, change: dict[str, object],
                                         field: str) -> None:
    (a,) = await _clients(app_conn, 1)
    values: dict[str, object] = {"client_id": a, "channel": "sms", "topic": "debt",
                                 "opted_in": False, "source": "operator"} | change
    with pytest.raises(InvalidInput) as caught:
        await record_consent(app_conn, OPERATOR, **values)  # type: ignore[arg-type]
    assert caught.value.field == field


async def test_unknown_topic_at_send_time(app_conn: asyncpg.Connection) -> None:
    with pytest.raises(InvalidInput) as caught:
        await load_consents(app_conn, [1], ["sms"], "lottery")
    assert caught.value.field == "topic"
