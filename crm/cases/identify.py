"""Who wrote or called: the client found by Client_ID, OR, phone or e-mail (SR-03, SR-06)."""

from __future__ import annotations

import re

import asyncpg
import msgspec

_OR_NUMBER = re.compile(r"^[0-9]{10}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_CANDIDATES = 10


class Identification(msgspec.Struct, frozen=True):
    """The client a case is linked to (None: anonymous) and, when the contact matched
    several clients, the candidates the operator chooses from."""

    client_id: int | None = None
    account_id: int | None = None
    identified_by: str | None = None
    candidates: tuple[int, ...] = ()


ANONYMOUS = Identification()


def valid_or_number(raw: str) -> bool:
    return bool(_OR_NUMBER.match(raw))


def valid_email(raw: str) -> bool:
    return bool(_EMAIL.match(raw))


async def _clients_by(conn: asyncpg.Connection, sql: str, value: str) -> set[int]:
    rows = await conn.fetch(sql, value, MAX_CANDIDATES + 1)
    return {r["client_id"] for r in rows}


_BY_PHONE = "SELECT DISTINCT client_id FROM contacts WHERE phone_digits = $1 AND is_active LIMIT $2"
_BY_EMAIL = (
    "SELECT DISTINCT client_id FROM contacts WHERE email_norm = lower($1) AND is_active LIMIT $2"
)


async def identify(
    conn: asyncpg.Connection,
    *,
    client_id: int | None = None,
    or_number: str | None = None,
    phone: str | None = None,
    email: str | None = None,
) -> Identification:
    """Find the client: an existing Client_ID first, then the OR number, then the clients
    whose active contacts have this phone and/or e-mail. One client found: linked; several:
    anonymous with the candidates listed; none: anonymous. ``phone`` is E.164."""
    if client_id is not None and await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM clients WHERE id = $1)", client_id
    ):
        return Identification(client_id, None, "client_id")
    if or_number is not None and valid_or_number(or_number):
        row = await conn.fetchrow(
            "SELECT id, client_id FROM accounts WHERE or_number = $1", or_number
        )
        if row is not None:
            return Identification(row["client_id"], row["id"], "or_number")
    by_phone = await _clients_by(conn, _BY_PHONE, phone[1:]) if phone else set()
    by_email = await _clients_by(conn, _BY_EMAIL, email) if email and valid_email(email) else set()
    for found, key in ((by_phone, "phone"), (by_email, "email")):
        if len(found) == 1:
            other = by_email if key == "phone" else by_phone
            # The other key pointing at someone else makes it ambiguous.
            if not other or found <= other:
                return Identification(next(iter(found)), None, key)
    both = by_phone & by_email
    if len(both) == 1:
        return Identification(next(iter(both)), None, "phone")
    candidates = sorted(both or (by_phone | by_email))[:MAX_CANDIDATES]
    return Identification(candidates=tuple(candidates))
