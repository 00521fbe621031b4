"""Consent management through the API: operator, self-service channels, unsubscribe links,
SMS STOP replies and imports; each writes the consent and its log entry, and the
dispatcher's check honours it."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from conftest import login_as
from dispatch_helpers import make_clients

from dispatcher.templating.templates import (
    EmailVariant,
    TemplateDraft,
    TemplateEngine,
    Variants,
)
from herald.settings import Settings
from providers.base import Outbound, Outcome
from providers.smtp import SmtpProvider
from rules.consent import UnsubscribeLinks, allowed, load_consents


async def _ok(response: Any, status: int = 200) -> Any:
    body = await response.json()
    assert response.status == status, body
    return body


async def _bad(response: Any, field: str, status: int = 400) -> dict[str, Any]:
    body = await response.json()
    assert response.status == status, body
    assert response.content_type == "application/problem+json"
    if status == 400:
        assert body["errors"][0]["field"] == field, body
    return body


async def _history(client: Any, headers: dict[str, str], client_id: int) -> list[dict[str, Any]]:
    page = await _ok(
        await client.get(f"/api/v1/clients/{client_id}/consents/history", headers=headers)
    )
    return page["items"]


def _entry(e: dict[str, Any]) -> tuple[Any, ...]:
    return (
        e["channel"],
        e["topic"],
        e["old_opted_in"],
        e["new_opted_in"],
        e["source"],
        e["actor_login"],
    )


async def _allowed(conn: asyncpg.Connection, client_id: int, channel: str, topic: str) -> bool:
    return allowed(await load_consents(conn, [client_id], [channel], topic), client_id, channel)


# --- operator and history ------------------------------------------------------------


async def test_operator_change_is_on_the_card_history(
    client, demo_users, admin_conn: asyncpg.Connection, app_conn: asyncpg.Connection
) -> None:
    operator = await login_as(client, "operator_cc")
    [a] = await make_clients(admin_conn, 1, start=10)
    path = f"/api/v1/clients/{a}/consents"
    # Given an operator records an opt-in to marketing SMS by phone, then an opt-out
    for opted_in in (True, True, False):
        await _ok(
            await client.put(
                path,
                headers=operator,
                json={
                    "channel": "sms",
                    "topic": "marketing",
                    "opted_in": opted_in,
                    "source": "operator",
                },
            )
        )
    # Then the card's history has both changes, newest first, with who and old/new
    history = await _history(client, operator, a)
    assert [_entry(e) for e in history] == [
        ("sms", "marketing", True, False, "operator", "operator.cc"),
        ("sms", "marketing", None, True, "operator", "operator.cc"),
    ]
    assert history[0]["request_id"] and history[0]["at"]
    page = await _ok(await client.get(f"{path}/history?limit=1", headers=operator))
    assert len(page["items"]) == 1 and page["next_before_id"] == history[0]["id"]
    page = await _ok(
        await client.get(f"{path}/history?before_id={page['next_before_id']}", headers=operator)
    )
    assert [e["new_opted_in"] for e in page["items"]] == [True]
    # and the dispatcher's check follows the last choice
    assert not await _allowed(app_conn, a, "sms", "marketing")
    # Unknown client 404, bad cursor 400, no permission 403
    await _bad(
        await client.get("/api/v1/clients/999999/consents/history", headers=operator), "", 404
    )
    await _bad(await client.get(f"{path}/history?limit=0", headers=operator), "limit")
    analyst = await login_as(client, "analyst")
    assert (await client.get(f"{path}/history", headers=analyst)).status == 403


# --- the cabinet, the app and the chatbot -------------------------------------------------


async def test_self_service_channels_record_the_source_they_name(
    client, demo_users, admin_conn: asyncpg.Connection, app_conn: asyncpg.Connection
) -> None:
    cabinet = await login_as(client, "integration")
    [a] = await make_clients(admin_conn, 1, start=20)
    or_number = await admin_conn.fetchval("SELECT or_number FROM accounts WHERE client_id = $1", a)
    # Given the cabinet shows the client's settings by OR number
    shown = await _ok(
        await client.get(f"/api/v1/self-service/consents?or_number={or_number}", headers=cabinet)
    )
    assert shown["client_id"] == a and shown["consents"] == []
    # When the client turns marketing e-mail on and debt Viber off there
    recorded = await _ok(
        await client.put(
            "/api/v1/self-service/consents",
            headers=cabinet,
            json={
                "or_number": or_number,
                "source": "cabinet",
                "changes": [
                    {"channel": "email", "topic": "marketing", "opted_in": True},
                    {"channel": "viber", "topic": "debt", "opted_in": False},
                ],
            },
        )
    )
    assert [(c["channel"], c["previous"], c["changed"]) for c in recorded["changes"]] == [
        ("email", None, True),
        ("viber", None, True),
    ]
    # and later turns marketing e-mail off in the app, by Client_ID
    await _ok(
        await client.put(
            "/api/v1/self-service/consents",
            headers=cabinet,
            json={
                "client_id": a,
                "source": "app",
                "changes": [{"channel": "email", "topic": "marketing", "opted_in": False}],
            },
        )
    )
    # Then the log names each source and the integration user
    operator = await login_as(client, "operator_cc")
    latest, *first = [_entry(e) for e in await _history(client, operator, a)]
    assert latest == ("email", "marketing", True, False, "app", "integration")
    assert set(first) == {
        ("email", "marketing", None, True, "cabinet", "integration"),
        ("viber", "debt", None, False, "cabinet", "integration"),
    }
    assert not await _allowed(app_conn, a, "viber", "debt")
    assert not await _allowed(app_conn, a, "email", "marketing")
    # Bad requests name the field; an operator may not use this API
    base: dict[str, Any] = {
        "client_id": a,
        "source": "chatbot",
        "changes": [{"channel": "sms", "topic": "debt", "opted_in": False}],
    }
    put = "/api/v1/self-service/consents"
    await _bad(
        await client.put(put, headers=cabinet, json={**base, "source": "operator"}), "source"
    )
    await _bad(
        await client.put(put, headers=cabinet, json={**base, "or_number": or_number}), "client_id"
    )
    await _bad(
        await client.put(
            put,
            headers=cabinet,
            json={**base, "changes": [{"channel": "sms", "topic": "spam", "opted_in": False}]},
        ),
        "changes.0.topic",
    )
    await _bad(
        await client.put(put, headers=cabinet, json={**base, "changes": base["changes"] * 2}),
        "changes.1",
    )
    await _bad(await client.put(put, headers=cabinet, json={**base, "changes": []}), "changes")
    await _bad(await client.put(put, headers=cabinet, json={**base, "client_id": 999_999}), "", 404)
    await _bad(
        await client.get("/api/v1/self-service/consents?or_number=0000000000", headers=cabinet),
        "",
        404,
    )
    await _bad(
        await client.get("/api/v1/self-service/consents?or_number=12", headers=cabinet), "or_number"
    )
    assert (await client.put(put, headers=operator, json=base)).status == 403


# --- unsubscribe links -----------------------------------------------------------------


async def test_unsubscribe_link_confirms_then_opts_out_once(
    client,
    demo_users,
    settings: Settings,
    admin_conn: asyncpg.Connection,
    app_conn: asyncpg.Connection,
) -> None:
    [a] = await make_clients(admin_conn, 1, start=30)
    await admin_conn.execute(
        "INSERT INTO consents (client_id, channel, topic, opted_in, source) "
        "VALUES ($1, 'email', 'marketing', true, 'contract')",
        a,
    )
    link = urlsplit(UnsubscribeLinks.from_settings(settings).url(a, "marketing")).path
    # When the link is opened (as a mail scanner would), Then it asks and changes nothing
    page = await client.get(link)
    assert page.status == 200 and page.content_type == "text/html"
    assert "«Маркетинг»" in await page.text() and '<form method="post">' in await page.text()
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert await _allowed(app_conn, a, "email", "marketing")
    # When the button is pressed, Then the client is out of marketing e-mail, logged once
    done = await client.post(link)
    assert done.status == 200 and "Ви відписалися" in await done.text()
    assert not await _allowed(app_conn, a, "email", "marketing")
    assert await _allowed(app_conn, a, "sms", "marketing") is False  # the topic default: opt-in
    # When the same link is used again (replayed), Then it confirms and logs nothing more
    again = await client.post(link)
    assert again.status == 200
    assert "Ви вже" in await (await client.get(link)).text()
    operator = await login_as(client, "operator_cc")
    assert [_entry(e) for e in await _history(client, operator, a)] == [
        ("email", "marketing", True, False, "email_unsubscribe", "unsubscribe-link")
    ]


async def test_tampered_unsubscribe_links_change_nothing(
    client, demo_users, settings: Settings, admin_conn: asyncpg.Connection
) -> None:
    [a, b] = await make_clients(admin_conn, 2, start=40)
    links = UnsubscribeLinks.from_settings(settings)
    client_part, topic, mac = links.token(a, "debt").split(".")
    forged = [
        f"{b}.{topic}.{mac}",
        f"{client_part}.marketing.{mac}",
        f"{client_part}.{topic}.{mac[::-1]}",
        "garbage",
        f"{client_part}.{topic}",
        UnsubscribeLinks(b"another key 1234", "https://x").token(a, "debt"),
        links.token(999_999, "debt"),
        links.token(a, "no_such_topic"),
    ]
    for token in forged:
        for method in ("GET", "POST"):
            response = await client.request(method, f"/u/{token}")
            assert response.status == 404, (method, token)
            assert "недійсне" in await response.text()
    assert await admin_conn.fetchval("SELECT count(*) FROM consents") == 0
    assert await admin_conn.fetchval("SELECT count(*) FROM consent_log") == 0


class _Capture:
    """An SMTP server keeping what it receives."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages.append(envelope.original_content or b"")
        return "250 2.0.0 OK queued as 1"


@pytest.fixture
async def smtp_capture() -> AsyncIterator[tuple[_Capture, int]]:
    capture = _Capture()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(capture, hostname="capture", loop=loop), host="127.0.0.1", port=0
    )
    yield capture, server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_an_email_carries_list_unsubscribe_whose_one_click_post_opts_out(
    client,
    demo_users,
    settings: Settings,
    admin_conn: asyncpg.Connection,
    app_conn: asyncpg.Connection,
    smtp_capture: tuple[_Capture, int],
) -> None:
    capture, port = smtp_capture
    [a] = await make_clients(admin_conn, 1, start=50)
    # Given a debt e-mail rendered for the client with their signed link (as the sender does)
    compiled = TemplateEngine().compile(
        TemplateDraft(
            "Борг",
            Variants(
                email=EmailVariant(
                    "Борг", '<p>Борг.</p><a href="{{ unsubscribe_url }}">Відписатися</a>'
                )
            ),
        )
    )
    https_links = UnsubscribeLinks.from_settings(settings)
    content = compiled.render_email({"unsubscribe_url": https_links.url(a, "debt")})
    # When it goes out over SMTP
    provider = SmtpProvider(host="127.0.0.1", port=port, sender=settings.smtp_sender, pool_size=1)
    try:
        [result] = await provider.send([Outbound("m1", "email", "client@example.com", content)])
    finally:
        await provider.aclose()
    assert result.outcome is Outcome.ACCEPTED
    # Then it carries List-Unsubscribe with the link (one-click only for https links)
    message = email.message_from_bytes(capture.messages[0], policy=email.policy.default)
    url = str(message["List-Unsubscribe"]).strip("<>")
    assert url == https_links.url(a, "debt") and url.startswith("http://127.0.0.1")
    assert message["List-Unsubscribe-Post"] is None
    # and a mail client's POST to it opts the client out of debt e-mail
    assert (await client.post(urlsplit(url).path, data="List-Unsubscribe=One-Click")).status == 200
    assert not await _allowed(app_conn, a, "email", "debt")
    assert await _allowed(app_conn, a, "sms", "debt")


def test_list_unsubscribe_headers_are_safe() -> None:
    from providers.smtp import unsubscribe_headers

    assert unsubscribe_headers("https://h.ua/u/1.debt.x") == (
        "List-Unsubscribe: <https://h.ua/u/1.debt.x>\r\n"
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    )
    for unsafe in (
        None,
        "",
        "https://h.ua/u/a\r\nBcc: x@y.ua",
        "https://h.ua/<x>",
        "javascript:alert(1)",
        "https://h.ua/u/ x",
        "https://h.ua/ю",
    ):
        assert unsubscribe_headers(unsafe) == "", unsafe


# --- SMS STOP replies -------------------------------------------------------------------


async def test_stop_reply_from_the_gateway(
    client,
    demo_users,
    settings: Settings,
    admin_conn: asyncpg.Connection,
    app_conn: asyncpg.Connection,
) -> None:
    gateway = {"Authorization": f"Bearer {settings.provider_api_token}"}
    [a] = await make_clients(admin_conn, 1, start=60)
    phone = await admin_conn.fetchval("SELECT phone FROM contacts WHERE client_id = $1", a)
    path = "/api/v1/providers/sms/inbound"
    # Given the gateway posts a STOP from the client's number in national form
    national = "0" + phone.removeprefix("+380")
    result = await _ok(
        await client.post(
            path, headers=gateway, json={"phone": national, "text": "STOP", "message_id": "gw-1"}
        )
    )
    # Then the client is out of debt SMS (not of service notices), with source sms_stop
    assert (result["action"], result["clients"], result["duplicate"]) == ("opted_out", [a], False)
    assert not await _allowed(app_conn, a, "sms", "debt")
    assert await _allowed(app_conn, a, "sms", "service") and await _allowed(
        app_conn, a, "viber", "debt"
    )
    history = await _history(client, await login_as(client, "operator_cc"), a)
    assert {(e["source"], e["actor_login"], e["detail"]["phone"]) for e in history} == {
        ("sms_stop", "sms-gateway", phone)
    }
    # A repeat is a no-op; other text is only logged; bad input is a 400; no token is a 401
    again = await _ok(
        await client.post(
            path, headers=gateway, json={"phone": phone, "text": "STOP", "message_id": "gw-1"}
        )
    )
    assert again["duplicate"] is True
    assert (
        await _ok(
            await client.post(
                path, headers=gateway, json={"phone": phone, "text": "Коли прийде рахунок?"}
            )
        )
    )["action"] == "ignored"
    await _bad(
        await client.post(path, headers=gateway, json={"phone": "12345", "text": "STOP"}), "phone"
    )
    await _bad(await client.post(path, headers=gateway, json={"text": "STOP"}), "phone")
    assert (await client.post(path, json={"phone": phone, "text": "STOP"})).status == 401
    assert len(await _history(client, await login_as(client, "operator_cc"), a)) == len(history)


# --- import -----------------------------------------------------------------------------


async def test_csv_import_reports_every_bad_row(
    client, demo_users, admin_conn: asyncpg.Connection, app_conn: asyncpg.Connection
) -> None:
    analyst_cannot = await login_as(client, "analyst")
    operator = await login_as(client, "operator_cc")
    a, b = await make_clients(admin_conn, 2, start=70)
    or_b = await admin_conn.fetchval("SELECT or_number FROM accounts WHERE client_id = $1", b)
    # Given a CSV as Excel saves it (BOM, semicolons, a quoted field, a blank line)
    csv_text = (
        "\ufeffClient_ID;OR_number;Channel;Topic;Opted_in\r\n"
        f"{a};;email;marketing;так\r\n"
        f";{or_b};SMS;debt;0\r\n"
        "\r\n"
        f'{a};;sms;debt;"maybe"\r\n'
        f"{a};;sms\r\n"
        "abc;;sms;debt;1\r\n"
        f"999999;;sms;debt;1\r\n"
    )
    path = "/api/v1/consents/import"
    # When it is checked (dry run), Then nothing changes but the outcome is known
    dry = await _ok(
        await client.post(
            f"{path}?dry_run=true",
            data=csv_text.encode(),
            headers={**operator, "Content-Type": "text/csv"},
        )
    )
    assert (dry["rows"], dry["applied"], dry["failed"], dry["dry_run"]) == (6, 2, 4, True)
    assert await admin_conn.fetchval("SELECT count(*) FROM consents") == 0
    # When imported, Then the good rows apply and each bad row is named with its row and field
    report = await _ok(
        await client.post(
            path, data=csv_text.encode(), headers={**operator, "Content-Type": "text/csv"}
        )
    )
    assert (report["rows"], report["applied"], report["unchanged"], report["failed"]) == (
        6,
        2,
        0,
        4,
    )
    assert [(e["row"], e["field"]) for e in report["errors"]] == [
        (5, "opted_in"),
        (6, "topic"),
        (7, "client_id"),
        (8, "client_id"),
    ]
    assert report["errors_truncated"] is False
    # and the log, the card and the dispatcher's check agree
    assert [_entry(e) for e in await _history(client, operator, b)] == [
        ("sms", "debt", None, False, "import", "operator.cc")
    ]
    assert not await _allowed(app_conn, b, "sms", "debt")
    assert await _allowed(app_conn, a, "email", "marketing")
    # Analysts may not import (marketers may, migration 0050); a file that is not a
    # consents file is a 400 naming the body
    assert (await client.post(path, data=csv_text.encode(), headers=analyst_cannot)).status == 403
    for bad in (
        b"",
        b"name;phone\r\nx;y\r\n",
        b"client_id,channel,topic\r\n1,sms,debt\r\n",
        b"client_id,channel,topic,opted_in\r\n",
        b"\xff\xfe\x00b",
        b'client_id,channel,topic,opted_in\r\n1,"sms,debt,1\r\n',
    ):
        await _bad(await client.post(path, data=bad, headers=operator), "body")


async def test_json_lines_import_with_contract_source(
    client, demo_users, admin_conn: asyncpg.Connection, app_conn: asyncpg.Connection
) -> None:
    admin = await login_as(client, "admin")
    [a] = await make_clients(admin_conn, 1, start=80)
    lines = (
        f'{{"client_id": {a}, "channel": "viber", "topic": "marketing", "opted_in": true}}\n'
        "\n"
        f'{{"client_id": {a}, "channel": "sms", "topic": "marketing", "opted_in": "yes", '
        '"note": "x"}\n'
        "not json\n"
        "[1, 2]\n"
    )
    report = await _ok(
        await client.post(
            "/api/v1/consents/import?source=contract",
            data=lines.encode(),
            headers={**admin, "Content-Type": "application/x-ndjson"},
        )
    )
    assert (report["rows"], report["applied"], report["failed"]) == (4, 1, 3)
    assert [(e["row"], e["field"]) for e in report["errors"]] == [
        (3, "note"),
        (4, "row"),
        (5, "row"),
    ]
    assert [_entry(e) for e in await _history(client, admin, a)] == [
        ("viber", "marketing", None, True, "contract", "admin")
    ]
    assert await _allowed(app_conn, a, "viber", "marketing")
    await _bad(
        await client.post(
            "/api/v1/consents/import?source=sms_stop", data=lines.encode(), headers=admin
        ),
        "source",
    )
