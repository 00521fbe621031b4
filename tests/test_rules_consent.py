"""Consent per client, channel and topic: pure decision and its store against PostgreSQL."""

from __future__ import annotations

import asyncpg
import pytest

from crm import audit as audit_journal
from herald import audit
from herald.errors import InvalidInput
from herald.phones import normalise_phone
from rules import consent
from rules.consent import Consents, allowed, load_consents, record_consent
from rules.decision import NO_CONSENT

OPERATOR = audit.Actor(login="operator1", id=None)


async def _clients(conn: asyncpg.Connection, n: int) -> list[int]:
    rows = await conn.fetch(
        "INSERT INTO clients (last_name, first_name) SELECT 'Тест', 'Клієнт' || g "
        "FROM generate_series(1, $1) g RETURNING id",
        n,
    )
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
        [
            (a, "sms", "debt", False),
            (b, "sms", "debt", True),
            (a, "email", "debt", False),
            (a, "sms", "marketing", True),
        ],
    )
    # When the consents of the batch for debt on SMS and Viber are loaded
    loaded = await load_consents(app_conn, [a, b, c], ["sms", "viber"], "debt")
    # Then only debt rows on those channels are there, with the topic default
    assert loaded == Consents("debt", False, {(a, "sms"): False, (b, "sms"): True})
    assert consent.check(loaded, [a, b, c], "sms") == {a: NO_CONSENT}
    assert consent.check(loaded, [a, b, c], "viber") == {}


async def test_marketing_needs_an_opt_in(app_conn: asyncpg.Connection) -> None:
    # Given marketing requires opt-in and one of two clients opted in on Viber
    a, b = await _clients(app_conn, 2)
    await record_consent(
        app_conn,
        OPERATOR,
        client_id=a,
        channel="viber",
        topic="marketing",
        opted_in=True,
        source="app",
    )
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
    await record_consent(
        app_conn,
        OPERATOR,
        client_id=a,
        channel="sms",
        topic="debt",
        opted_in=False,
        source="sms_stop",
    )
    # Then the next batch's check, reading at send time, skips them
    after = await load_consents(app_conn, [a], ["sms"], "debt")
    assert consent.check(after, [a], "sms") == {a: NO_CONSENT}


async def test_changes_are_journalled(app_conn: asyncpg.Connection) -> None:
    # Given a client
    (a,) = await _clients(app_conn, 1)
    # When they opt in, opt in again (no change) and opt out
    assert (
        await record_consent(
            app_conn,
            OPERATOR,
            client_id=a,
            channel="email",
            topic="marketing",
            opted_in=True,
            source="cabinet",
        )
        is None
    )
    assert (
        await record_consent(
            app_conn,
            OPERATOR,
            client_id=a,
            channel="email",
            topic="marketing",
            opted_in=True,
            source="cabinet",
        )
        is True
    )
    assert (
        await record_consent(
            app_conn,
            OPERATOR,
            client_id=a,
            channel="email",
            topic="marketing",
            opted_in=False,
            source="email_unsubscribe",
        )
        is True
    )
    # Then the journal holds two entries, newest first, by the operator
    entries = await audit_journal.history(
        app_conn, "consent", f"{a}:email:marketing", limit=10, pii_visible=True
    )
    assert [(e.action, e.old_value, e.new_value) for e in entries] == [
        ("update", True, False),
        ("create", None, True),
    ]
    assert {e.actor_login for e in entries} == {"operator1"}


@pytest.mark.parametrize(
    "change, field",
    [
        ({"source": "fax"}, "source"),
        ({"channel": "pigeon"}, "channel"),
        ({"topic": "nope"}, "topic"),
        ({"client_id": 999_999_999}, "client_id"),
    ],
)
async def test_bad_input_names_the_field(
    app_conn: asyncpg.Connection, change: dict[str, object], field: str
) -> None:
    (a,) = await _clients(app_conn, 1)
    values: dict[str, object] = {
        "client_id": a,
        "channel": "sms",
        "topic": "debt",
        "opted_in": False,
        "source": "operator",
    } | change
    with pytest.raises(InvalidInput) as caught:
        await record_consent(app_conn, OPERATOR, **values)  # type: ignore[arg-type]  # a bad value on purpose
    assert caught.value.field == field


async def test_unknown_topic_at_send_time(app_conn: asyncpg.Connection) -> None:
    with pytest.raises(InvalidInput) as caught:
        await load_consents(app_conn, [1], ["sms"], "lottery")
    assert caught.value.field == "topic"


# --- the consent log -----------------------------------------------------------------


async def _log(conn: asyncpg.Connection, client_id: int) -> list[tuple[object, ...]]:
    rows = await conn.fetch(
        "SELECT channel, topic, old_opted_in, new_opted_in, source, actor_login FROM consent_log "
        "WHERE client_id = $1 ORDER BY id",
        client_id,
    )
    return [tuple(r) for r in rows]


async def test_every_change_is_logged_with_source_old_and_new(app_conn: asyncpg.Connection) -> None:
    # Given a client who opts in to marketing e-mail, says so again, then opts out by link
    (a,) = await _clients(app_conn, 1)
    await record_consent(
        app_conn,
        OPERATOR,
        client_id=a,
        channel="email",
        topic="marketing",
        opted_in=True,
        source="cabinet",
    )
    await record_consent(
        app_conn,
        OPERATOR,
        client_id=a,
        channel="email",
        topic="marketing",
        opted_in=True,
        source="app",
    )
    await record_consent(
        app_conn,
        audit.Actor(login="unsubscribe-link"),
        client_id=a,
        channel="email",
        topic="marketing",
        opted_in=False,
        source="email_unsubscribe",
    )
    # Then the log holds the two changes with who, source, old and new; the repeat changed nothing
    assert await _log(app_conn, a) == [
        ("email", "marketing", None, True, "cabinet", "operator1"),
        ("email", "marketing", True, False, "email_unsubscribe", "unsubscribe-link"),
    ]
    row = await app_conn.fetchrow("SELECT opted_in, source FROM consents WHERE client_id = $1", a)
    assert (row["opted_in"], row["source"]) == (False, "email_unsubscribe")
    # and the history reads it newest first, page by page
    page = await consent.history(app_conn, a, limit=1)
    assert [(e.old_opted_in, e.new_opted_in) for e in page] == [(True, False)]
    older = await consent.history(app_conn, a, limit=5, before_id=page[0].id)
    assert [(e.source, e.actor_login) for e in older] == [("cabinet", "operator1")]


async def test_many_choices_are_recorded_in_one_statement(app_conn: asyncpg.Connection) -> None:
    # Given two clients, one already opted out of debt SMS
    a, b = await _clients(app_conn, 2)
    await record_consent(
        app_conn,
        OPERATOR,
        client_id=a,
        channel="sms",
        topic="debt",
        opted_in=False,
        source="operator",
    )
    # When several choices are recorded at once, one key twice (the last wins)
    applied = await consent.apply_choices(
        app_conn,
        OPERATOR,
        "chatbot",
        [
            consent.Choice(a, "sms", "debt", False),
            consent.Choice(b, "sms", "debt", True),
            consent.Choice(b, "viber", "marketing", False),
            consent.Choice(b, "viber", "marketing", True),
        ],
    )
    # Then each reports its previous state and whether it changed; only changes are logged
    assert sorted((x.client_id, x.channel, x.previous, x.changed) for x in applied) == [
        (a, "sms", False, False),
        (b, "sms", None, True),
        (b, "viber", None, True),
    ]
    assert set(await _log(app_conn, b)) == {
        ("sms", "debt", None, True, "chatbot", "operator1"),
        ("viber", "marketing", None, True, "chatbot", "operator1"),
    }
    # and the dispatcher's check reads the new state
    loaded = await load_consents(app_conn, [a, b], ["viber"], "marketing")
    assert allowed(loaded, b, "viber") and not allowed(loaded, a, "viber")


async def test_the_log_is_append_only(
    app_conn: asyncpg.Connection, admin_conn: asyncpg.Connection
) -> None:
    (a,) = await _clients(app_conn, 1)
    await record_consent(
        app_conn,
        OPERATOR,
        client_id=a,
        channel="sms",
        topic="debt",
        opted_in=False,
        source="operator",
    )
    # The application role may not change it; nor may the owner (trigger)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.execute("UPDATE consent_log SET new_opted_in = true")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.execute("DELETE FROM consent_log")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await admin_conn.execute("DELETE FROM consent_log")
    assert len(await _log(app_conn, a)) == 1


# --- unsubscribe links, STOP words, phone numbers --------------------------------------


def test_unsubscribe_tokens_are_signed() -> None:
    links = consent.UnsubscribeLinks(b"k" * 32, "https://herald.example.ua/")
    token = links.token(12345, "marketing")
    # A genuine token reads back; the URL is under /u/
    assert links.read(token) == (12345, "marketing")
    assert links.url(12345, "marketing") == f"https://herald.example.ua/u/{token}"
    # A token changed anywhere, or signed with another key, or malformed, does not
    client, topic, mac = token.split(".")
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    for forged in (
        f"12346.{topic}.{mac}",
        f"{client}.debt.{mac}",
        f"{client}.{topic}.{flipped}",
        consent.UnsubscribeLinks(b"x" * 32, "https://h.ua").token(12345, "marketing"),
        "",
        "abc",
        f"{client}.{topic}",
        f"0.{topic}.{mac}",
        f"{token}.x",
        f"-1.{topic}.{mac}",
        f"{client}.{topic}.{mac}==",
    ):
        assert links.read(forged) is None, forged


@pytest.mark.parametrize(
    ("text", "stop"),
    [
        ("STOP", True),
        ("stop", True),
        (" Stop! ", True),
        ("СТОП", True),
        ("стоп.", True),
        ("Відписатися", True),
        ("STOP ALL", False),
        ("stopall", True),
        ("Стоп стоп", True),
        ("SТОР", True),  # Т, О, Р typed in Cyrillic
        ("Unsubscribe", True),
        ("отписаться", True),
        ("stop sending me debt notices please", False),
        ("Дякую", False),
        ("", False),
        ("Не стоп", False),
        ("123", False),
        ("stopp", False),
    ],
)
def test_stop_words(text: str, stop: bool) -> None:
    assert consent.is_stop(text) is stop


def test_sender_numbers_are_normalised() -> None:
    assert normalise_phone("+380501234567") == "+380501234567"
    assert normalise_phone("380501234567") == "+380501234567"
    assert normalise_phone("050 123 45 67") == "+380501234567"
    assert normalise_phone("+4915112345678") == "+4915112345678"
    for bad in ("12", "abc", "+38050"):
        assert normalise_phone(bad) is None


async def _with_phone(
    conn: asyncpg.Connection, client_id: int, phone: str, active: bool = True
) -> None:
    await conn.execute(
        "INSERT INTO contacts (client_id, phone, is_active) VALUES ($1, $2, $3)",
        client_id,
        phone,
        active,
    )


GATEWAY = audit.Actor(login="sms-gateway")


async def test_stop_opts_out_every_client_of_the_number_except_service(
    app_conn: asyncpg.Connection,
) -> None:
    # Given two clients sharing a phone, a third who had it once (inactive contact), one opted in
    a, b, c = await _clients(app_conn, 3)
    phone = "+380671112233"
    await _with_phone(app_conn, a, phone)
    await _with_phone(app_conn, b, phone)
    await _with_phone(app_conn, c, phone, active=False)
    await record_consent(
        app_conn,
        OPERATOR,
        client_id=a,
        channel="sms",
        topic="marketing",
        opted_in=True,
        source="contract",
    )
    # When the number replies STOP
    result = await consent.inbound_sms(
        app_conn, GATEWAY, phone=phone, text="Стоп", provider_message_id="in-1"
    )
    # Then both active clients are out of SMS for every topic but service notices
    assert (result.action, result.clients) == ("opted_out", [a, b])
    assert result.topics == ["billing", "case_status", "debt", "marketing"]
    for topic in result.topics:
        loaded = await load_consents(app_conn, [a, b, c], ["sms", "viber"], topic)
        assert consent.check(loaded, [a, b, c], "sms") == (
            {a: NO_CONSENT, b: NO_CONSENT, c: NO_CONSENT}
            if topic == "marketing"
            else {a: NO_CONSENT, b: NO_CONSENT}
        )
        assert consent.check(loaded, [a, b], "viber") == (
            {a: NO_CONSENT, b: NO_CONSENT} if topic == "marketing" else {}
        )
    service = await load_consents(app_conn, [a, b], ["sms"], "service")
    assert consent.check(service, [a, b], "sms") == {}
    # and each change is logged with source sms_stop, old state and the message
    log = await app_conn.fetch(
        "SELECT topic, old_opted_in, source, actor_login, detail "
        "FROM consent_log WHERE client_id = $1 AND source = 'sms_stop' "
        "ORDER BY topic",
        a,
    )
    assert [(r["topic"], r["old_opted_in"]) for r in log] == [
        ("billing", None),
        ("case_status", None),
        ("debt", None),
        ("marketing", True),
    ]
    assert {r["actor_login"] for r in log} == {"sms-gateway"}
    assert log[0]["detail"]["phone"] == phone and log[0]["detail"]["text"] == "Стоп"
    # When the gateway posts the same message again, Then nothing more happens
    again = await consent.inbound_sms(
        app_conn, GATEWAY, phone=phone, text="Стоп", provider_message_id="in-1"
    )
    assert again.duplicate and again.clients == [a, b]
    assert (
        await app_conn.fetchval("SELECT count(*) FROM consent_log WHERE source = 'sms_stop'") == 8
    )


async def test_other_replies_and_unknown_numbers_are_logged_only(
    app_conn: asyncpg.Connection,
) -> None:
    (a,) = await _clients(app_conn, 1)
    await _with_phone(app_conn, a, "+380671112244")
    # Given a thank-you from a known number and a STOP from an unknown one
    thanks = await consent.inbound_sms(
        app_conn, GATEWAY, phone="+380671112244", text="Дякую!", provider_message_id=None
    )
    unknown = await consent.inbound_sms(
        app_conn, GATEWAY, phone="+380671119999", text="STOP", provider_message_id="in-2"
    )
    # Then neither changes a consent, both are in the inbound log
    assert (thanks.action, thanks.clients, unknown.action) == ("ignored", [], "unknown_number")
    assert await app_conn.fetchval("SELECT count(*) FROM consent_log") == 0
    assert [
        tuple(r)
        for r in await app_conn.fetch("SELECT phone, text, action FROM sms_inbound ORDER BY id")
    ] == [("+380671112244", "Дякую!", "ignored"), ("+380671119999", "STOP", "unknown_number")]


# --- import ---------------------------------------------------------------------------


async def test_import_applies_valid_rows_and_lists_every_refused_one(
    app_conn: asyncpg.Connection, admin_conn: asyncpg.Connection
) -> None:
    a, b = await _clients(app_conn, 2)
    await admin_conn.execute(
        "INSERT INTO accounts (client_id, or_number, eic_code, region_code, city, street, building, "
        "consumer_type, tariff_code, opened_at) VALUES ($1, '0412345678', '56XS00000000001A', "
        "'UA-30', 'Київ', 'Хрещатик', '1', 'household', 'household_fixed', '2020-01-01')",
        b,
    )
    await record_consent(
        app_conn,
        OPERATOR,
        client_id=a,
        channel="sms",
        topic="debt",
        opted_in=False,
        source="operator",
    )
    rows: list[dict[str, object]] = [
        {"client_id": a, "channel": "email", "topic": "marketing", "opted_in": True},  # 2 applied
        {
            "or_number": "0412345678",
            "channel": "sms",
            "topic": "debt",
            "opted_in": "ні",
        },  # 3 applied
        {"client_id": a, "channel": "sms", "topic": "debt", "opted_in": "no"},  # 4 unchanged
        {"client_id": 999_999, "channel": "sms", "topic": "debt", "opted_in": "1"},  # 5 no client
        {"or_number": "0000000001", "channel": "sms", "topic": "debt", "opted_in": "1"},  # 6 no OR
        {"client_id": a, "channel": "sms", "topic": "lottery", "opted_in": "1"},  # 7 topic
        {"client_id": a, "channel": "fax", "topic": "debt", "opted_in": "1"},  # 8 channel
        {"client_id": a, "channel": "sms", "topic": "debt", "opted_in": "maybe"},  # 9 flag
        {"channel": "sms", "topic": "debt", "opted_in": "1"},  # 10 who
        {
            "client_id": b,
            "or_number": "0412345678",
            "channel": "viber",
            "topic": "debt",
            "opted_in": "0",
        },  # 11 superseded
        {"client_id": b, "channel": "viber", "topic": "debt", "opted_in": "1"},  # 12 applied
        {
            "client_id": a,
            "or_number": "0412345678",
            "channel": "sms",
            "topic": "debt",
            "opted_in": "1",
        },  # 13 mismatch
    ]
    staged: list[consent.StagedRow] = []
    refused: list[consent.RowError] = []
    for number, values in enumerate(rows, 2):
        found = consent.stage_row(number, values)
        if isinstance(found, consent.RowError):
            refused.append(found)
        else:
            staged.append(found)
    # When imported (a dry run first)
    dry = await consent.import_choices(
        app_conn,
        OPERATOR,
        source="import",
        rows=len(rows),
        staged=staged,
        refused=refused,
        dry_run=True,
    )
    assert (dry.applied, dry.failed) == (3, 8)
    assert await app_conn.fetchval("SELECT count(*) FROM consent_log WHERE source = 'import'") == 0
    report = await consent.import_choices(
        app_conn, OPERATOR, source="import", rows=len(rows), staged=staged, refused=refused
    )
    # Then the valid rows are applied, and each refused row is listed with its field
    assert (report.rows, report.applied, report.unchanged, report.failed) == (12, 3, 1, 8)
    assert [(e.row, e.field) for e in report.errors] == [
        (5, "client_id"),
        (6, "or_number"),
        (7, "topic"),
        (8, "channel"),
        (9, "opted_in"),
        (10, "client_id"),
        (11, "client_id"),
        (13, "or_number"),
    ]
    assert "row 12" in report.errors[6].detail and f"client {b}" in report.errors[7].detail
    # and the consents, the log and the dispatcher's check agree
    assert set(await _log(app_conn, b)) == {
        ("sms", "debt", None, False, "import", "operator1"),
        ("viber", "debt", None, True, "import", "operator1"),
    }
    loaded = await load_consents(app_conn, [a, b], ["sms", "email"], "debt")
    assert consent.check(loaded, [a, b], "sms") == {a: NO_CONSENT, b: NO_CONSENT}
    journal = await audit_journal.history(
        app_conn, "consent", f"{b}:viber:debt", limit=5, pii_visible=True
    )
    assert [(e.action, e.new_value) for e in journal] == [("create", True)]
