"""Shared helpers of the case tests (no tests here): clients with accounts and contacts,
webhook signing, problem checks."""

from __future__ import annotations

import hashlib
import hmac
import itertools
from typing import Any

import asyncpg
import msgspec
from conftest import login_as

_or_numbers = itertools.count(1_000_000_001)
_eic = itertools.count(1)

VIBER_TOKEN = "viber-auth-token-0123456789abcdef"
TELEGRAM_SECRET = "telegram-secret-0123456789"


async def make_client(
    conn: asyncpg.Connection,
    *,
    last_name: str = "Шевченко",
    phone: str | None = None,
    email: str | None = None,
    consumer_type: str = "household",
    debt: float | None = None,
) -> dict[str, Any]:
    """A client with one account (its OR number returned) and, if given, a contact."""
    client_id = await conn.fetchval(
        "INSERT INTO clients (last_name, first_name) VALUES ($1, 'Тарас') RETURNING id", last_name
    )
    or_number = str(next(_or_numbers))
    account_id = await conn.fetchval(
        """
        INSERT INTO accounts (client_id, or_number, eic_code, region_code, city, street, building,
                              consumer_type, tariff_code, opened_at)
        VALUES ($1, $2, $3, 'UA-30', 'Київ', 'Хрещатик', '1', $4, 'household_fixed', '2020-01-01')
        RETURNING id
        """,
        client_id,
        or_number,
        f"56X{next(_eic):013d}",
        consumer_type,
    )
    if phone or email:
        contact_id = await conn.fetchval(
            "INSERT INTO contacts (client_id, phone, email) VALUES ($1, $2, $3) RETURNING id",
            client_id,
            phone,
            email,
        )
        await conn.execute(
            "INSERT INTO account_contacts (account_id, contact_id, role) VALUES ($1, $2, 'owner')",
            account_id,
            contact_id,
        )
    if debt is not None:
        await conn.execute(
            "INSERT INTO billing_snapshots (account_id, balance, debt, fetched_at) "
            "VALUES ($1, $2, $3, herald_now())",
            account_id,
            -debt,
            debt,
        )
    return {"client_id": client_id, "account_id": account_id, "or_number": or_number}


def viber_signature(body: bytes, token: str = VIBER_TOKEN) -> str:
    return hmac.new(token.encode(), body, hashlib.sha256).hexdigest()


def viber_message(
    sender_id: str, text: str, token: int, *, name: str = "Олена", contact_phone: str | None = None
) -> bytes:
    """A Viber 'message' callback as the REST bot API posts it."""
    message: dict[str, Any] = {"type": "text", "text": text}
    if contact_phone:
        message = {"type": "contact", "contact": {"name": name, "phone_number": contact_phone}}
    return msgspec.json.encode(
        {
            "event": "message",
            "timestamp": 1767225600000,
            "chat_hostname": "SN-376_",
            "message_token": token,
            "sender": {
                "id": sender_id,
                "name": name,
                "avatar": "https://example.com/a.jpg",
                "language": "uk",
                "country": "UA",
                "api_version": 10,
            },
            "message": message,
            "silent": False,
        }
    )


def telegram_update(
    update_id: int,
    chat_id: int,
    message_id: int,
    text: str | None,
    *,
    contact_phone: str | None = None,
) -> dict[str, Any]:
    """A Telegram Update with a new private message, as the Bot API posts it."""
    message: dict[str, Any] = {
        "message_id": message_id,
        "date": 1767225600,
        "from": {
            "id": chat_id,
            "is_bot": False,
            "first_name": "Ігор",
            "last_name": "Коваль",
            "username": "igor_k",
            "language_code": "uk",
        },
        "chat": {"id": chat_id, "first_name": "Ігор", "type": "private"},
    }
    if text is not None:
        message["text"] = text
    if contact_phone:
        message["contact"] = {
            "phone_number": contact_phone,
            "first_name": "Ігор",
            "user_id": chat_id,
        }
    return {"update_id": update_id, "message": message}


async def configure_webhooks(client: Any) -> None:
    admin = await login_as(client, "admin")
    for channel, secret in (("viber", VIBER_TOKEN), ("telegram", TELEGRAM_SECRET)):
        response = await client.put(
            f"/api/v1/case-webhooks/{channel}", headers=admin, json={"secret": secret}
        )
        assert response.status == 204, await response.text()


async def bad(response: Any, field: str, status: int = 400) -> dict[str, Any]:
    """Assert a problem of ``status`` naming ``field`` (for a 400); return its body."""
    body = await response.json()
    assert response.status == status, body
    assert response.content_type == "application/problem+json"
    if status == 400:
        assert [e["field"] for e in body["errors"]] == [field], body
    return body


async def ok(response: Any, status: int = 200) -> Any:
    body = await response.json() if response.status != 204 else None
    assert response.status == status, body
    return body


async def events_of(client: Any, headers: dict[str, str], case_id: int) -> list[dict[str, Any]]:
    return (await ok(await client.get(f"/api/v1/cases/{case_id}/events", headers=headers)))["items"]


async def journal(client: Any, entity: str) -> list[dict[str, Any]]:
    admin = await login_as(client, "admin")
    return (await ok(await client.get(f"/api/v1/audit/{entity}", headers=admin)))["items"]
