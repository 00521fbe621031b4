"""Contacts of a client: the card, links to accounts with a role, duplicates and merge (CM-01).

Nothing is ever deleted: a contact is deactivated (``is_active = false``), a link is
broken (``is_active = false``, ``unlinked_at`` set) and re-linking reactivates the same
row, which keeps its first ``linked_at``.

Journal (``crm.audit``), one entry per changed field, all under entity ``contact`` with
the contact's id, so one history holds everything about a contact:

* fields: action ``create`` or ``update``, field = column name (``passport_norm`` is
  derived and not journalled);
* links: field ``link:<account_id>`` whose value is the link's active role, or null when
  there is no active link. Action ``link`` (null -> role: new link or re-link),
  ``update`` (role -> role) or ``unlink`` (role -> null);
* a contact knowingly created or edited as a duplicate: action ``allow_duplicate``,
  field ``duplicate_of``, the candidates' kinds and ids;
* a merge: action ``merge`` on both contacts: ``merged_into`` on the merged one,
  ``merged_from`` on the survivor, and every field filled and link moved or changed by it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import asyncpg
import msgspec

from crm import pii
from herald import audit, phones
from herald.audit import Actor, Change
from herald.bounds import Id
from herald.errors import Conflict, InvalidInput, NotFound
from herald.exports import ExportQuery

Role = Literal["owner", "co_owner", "billing_contact"]
# A merge that meets two links to the same account keeps the stronger role.
ROLE_STRENGTH: Mapping[str, int] = {"owner": 3, "co_owner": 2, "billing_contact": 1}
NAME_FIELDS = ("last_name", "first_name", "middle_name")
FIELDS = (*NAME_FIELDS, "phone", "email", "passport_number")
MAX_CANDIDATES = 50

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PASSPORT = re.compile(r"^(?:[А-ЯҐЄІЇ]{2}[0-9]{6}|[0-9]{9})$")
# Latin letters typed for their Cyrillic twins in booklet series ("KA" for "КА").
_LATIN_TWINS = str.maketrans("ABCEHIKMOPTX", "АВСЕНІКМОРТХ")


class Link(msgspec.Struct, frozen=True):
    """A contact's link to an account, with the account's OR number and owner."""

    account_id: int
    or_number: str
    account_client_id: int
    role: str
    is_active: bool
    linked_at: dt.datetime
    unlinked_at: dt.datetime | None


class Contact(msgspec.Struct, frozen=True):
    id: int
    client_id: int
    last_name: str | None
    first_name: str | None
    middle_name: str | None
    phone: str | None
    email: str | None
    passport_number: str | None
    is_active: bool
    merged_into: int | None
    merged_from: list[int]
    created_at: dt.datetime
    updated_at: dt.datetime
    links: list[Link]


class Candidate(msgspec.Struct, frozen=True):
    """A possible duplicate: an active contact, or a client whose passport matches."""

    kind: Literal["contact", "client"]
    id: int
    client_id: int
    last_name: str | None
    first_name: str | None
    middle_name: str | None
    matched: list[str]


class DuplicateContact(Conflict):
    """The contact's phone, e-mail or passport belongs to someone else already."""

    code = "duplicate-contact"

    def __init__(self, candidates: list[Candidate]) -> None:
        super().__init__(
            f"{len(candidates)} possible duplicate(s) found; merge, change the data, "
            "or repeat with allow_duplicate true to keep both"
        )
        self.candidates = candidates


class MergedLink(msgspec.Struct, frozen=True):
    """What a merge did with one active link of the merged contact."""

    account_id: int
    role: str
    outcome: Literal[
        "moved", "already_linked", "kept_stronger_role", "role_upgraded", "reactivated"
    ]
    note: str | None = None


class MergeResult(msgspec.Struct, frozen=True):
    survivor: Contact
    merged: Contact
    filled_fields: list[str]
    links: list[MergedLink]


# -- normalisation ---------------------------------------------------------------------


def normalise_phone(raw: str, field: str = "phone") -> str:
    """E.164 of a phone written any usual way (0671234567, +38 (067) 123-45-67, 380671234567)."""
    found = phones.normalise_phone(raw)
    if found is None:
        raise InvalidInput(field, f"not a valid phone number: {raw!r}")
    return found


def normalise_email(raw: str, field: str = "email") -> str:
    value = raw.strip()
    if len(value) > 254 or not _EMAIL.match(value):
        raise InvalidInput(field, f"not a valid e-mail address: {raw!r}")
    return value


def passport_norm(raw: str, field: str = "passport_number") -> str:
    """The comparable form of a passport: a booklet (КА123456) or an ID card (9 digits)."""
    value = re.sub(r"[\s\-]+", "", raw).upper().translate(_LATIN_TWINS)
    if not _PASSPORT.match(value):
        raise InvalidInput(
            field,
            "a passport is two Cyrillic letters and 6 digits (booklet) "
            f"or 9 digits (ID card), got {raw!r}",
        )
    return value


mask_passport = pii.mask


def _clean(name: str, value: Any) -> Any:
    """The stored form of one editable field; empty strings clear a field."""
    if value is None:
        return None
    if name == "is_active":
        return value
    text = " ".join(str(value).split())
    if not text:
        return None
    if name == "phone":
        return normalise_phone(text)
    if name == "email":
        return normalise_email(text)
    if name == "passport_number":
        passport_norm(text)
    return text


def _dup_keys(values: Mapping[str, Any]) -> dict[str, str]:
    """The comparable values of the duplicate check, by field name."""
    keys: dict[str, str] = {}
    if values.get("phone"):
        keys["phone"] = values["phone"][1:]
    if values.get("email"):
        keys["email"] = values["email"].lower()
    if values.get("passport_number"):
        keys["passport_number"] = passport_norm(values["passport_number"])
    return keys


# -- reading ---------------------------------------------------------------------------

_CONTACT = """
SELECT c.id, c.client_id, c.last_name, c.first_name, c.middle_name, c.phone, c.email,
       c.passport_number, c.is_active, c.merged_into, c.created_at, c.updated_at,
       coalesce((SELECT array_agg(m.id ORDER BY m.id) FROM contacts m WHERE m.merged_into = c.id),
                '{}') AS merged_from
FROM contacts c
"""
_LINKS = """
SELECT ac.contact_id, ac.account_id, a.or_number, a.client_id AS account_client_id, ac.role,
       ac.is_active, ac.linked_at, ac.unlinked_at
FROM account_contacts ac JOIN accounts a ON a.id = ac.account_id
WHERE ac.contact_id = ANY($1::bigint[])
ORDER BY ac.contact_id, ac.is_active DESC, ac.account_id
"""


async def _assemble(conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]) -> list[Contact]:
    links: dict[int, list[Link]] = {r["id"]: [] for r in rows}
    for link in await conn.fetch(_LINKS, list(links)):
        values = dict(link)
        links[values.pop("contact_id")].append(Link(**values))
    return [Contact(**dict(r), links=links[r["id"]]) for r in rows]


async def get_contact(conn: asyncpg.Connection, contact_id: int) -> Contact:
    row = await conn.fetchrow(_CONTACT + " WHERE c.id = $1", contact_id)
    if row is None:
        raise NotFound(f"contact {contact_id} does not exist")
    return (await _assemble(conn, [row]))[0]


async def client_contacts(
    conn: asyncpg.Connection, client_id: int, *, active_only: bool = False
) -> list[Contact]:
    """The client's own contacts and those linked to its accounts, active and inactive."""
    if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM clients WHERE id = $1)", client_id):
        raise NotFound(f"client {client_id} does not exist")
    rows = await conn.fetch(
        _CONTACT
        + """
        WHERE c.id IN (SELECT id FROM contacts WHERE client_id = $1
                       UNION
                       SELECT ac.contact_id FROM accounts a
                       JOIN account_contacts ac ON ac.account_id = a.id WHERE a.client_id = $1)
          AND (c.is_active OR NOT $2)
        ORDER BY c.is_active DESC, c.id
        LIMIT 500""",
        client_id,
        active_only,
    )
    return await _assemble(conn, rows)


class ContactExportFilters(msgspec.Struct, forbid_unknown_fields=True):
    """``client_id``: that client's contacts as its card lists them (its own and those
    linked to its accounts); all contacts without it. ``active_only``: inactive left out."""

    client_id: Id | None = None
    active_only: bool = False


_EXPORT_COLUMNS = (
    "id",
    "client_id",
    "last_name",
    "first_name",
    "middle_name",
    "phone",
    "email",
    "passport_number",
    "is_active",
    "merged_into",
    "created_at",
    "updated_at",
)


async def export_query(
    conn: asyncpg.Connection, f: ContactExportFilters, *, pii_visible: bool
) -> ExportQuery:
    """The contacts for ``f``, in the card's order; the passport masked unless ``pii_visible``."""
    local = "to_char(c.{0} AT TIME ZONE herald_business_tz(), 'YYYY-MM-DD HH24:MI:SS') AS {0}"
    passport = "c.passport_number" if pii_visible else "herald_pii_mask(c.passport_number)"
    columns = [
        local.format(c)
        if c in ("created_at", "updated_at")
        else f"{passport} AS passport_number"
        if c == "passport_number"
        else f"c.{c}"
        for c in _EXPORT_COLUMNS
    ]
    args: tuple[object, ...] = (f.active_only,)
    where = "(c.is_active OR NOT $1)"
    order = "c.id"
    if f.client_id is not None:
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM clients WHERE id = $1)", f.client_id
        ):
            raise NotFound(f"client {f.client_id} does not exist")
        args = (f.active_only, f.client_id)
        where += """ AND c.id IN (SELECT id FROM contacts WHERE client_id = $2
                       UNION
                       SELECT ac.contact_id FROM accounts a
                       JOIN account_contacts ac ON ac.account_id = a.id WHERE a.client_id = $2)"""
        order = "c.is_active DESC, c.id"
    sql = f"SELECT {', '.join(columns)} FROM contacts c WHERE {where} ORDER BY {order}"
    return ExportQuery(sql, args, _EXPORT_COLUMNS, title="contacts")


# -- duplicates ------------------------------------------------------------------------

_DUPLICATES = """
SELECT 'contact' AS kind, c.id, c.client_id, c.last_name, c.first_name, c.middle_name,
       array_remove(ARRAY[CASE WHEN c.phone_digits = $1 THEN 'phone' END,
                          CASE WHEN c.email_norm = $2 THEN 'email' END,
                          CASE WHEN c.passport_norm = $3 THEN 'passport_number' END], NULL) AS matched
FROM contacts c
WHERE c.id IN (SELECT id FROM contacts WHERE phone_digits = $1
               UNION SELECT id FROM contacts WHERE email_norm = $2
               UNION SELECT id FROM contacts WHERE passport_norm = $3)
  AND c.is_active AND c.id <> $4
UNION ALL
SELECT 'client', cl.id, cl.id, cl.last_name, cl.first_name, cl.middle_name, ARRAY['passport_number']
FROM clients cl
WHERE cl.passport_norm = $3 AND cl.id <> $5
ORDER BY kind DESC, id
LIMIT $6
"""


async def find_duplicates(
    conn: asyncpg.Connection,
    *,
    phone: str | None = None,
    email: str | None = None,
    passport: str | None = None,
    exclude_contact_id: int | None = None,
    client_id: int | None = None,
) -> list[Candidate]:
    """Active contacts sharing the normalised phone, e-mail or passport; clients sharing the passport.

    Values are already normalised (E.164 phone, e-mail, passport as written). The contact
    itself and, for the passport, its own client (the owner as a contact) are not duplicates.
    """
    keys = _dup_keys({"phone": phone, "email": email, "passport_number": passport})
    if not keys:
        return []
    rows = await conn.fetch(
        _DUPLICATES,
        keys.get("phone"),
        keys.get("email"),
        keys.get("passport_number"),
        exclude_contact_id or 0,
        client_id or 0,
        MAX_CANDIDATES,
    )
    return [Candidate(**dict(r)) for r in rows]


async def _check_duplicates(
    conn: asyncpg.Connection,
    contact_id: int | None,
    client_id: int,
    values: Mapping[str, Any],
    *,
    allow: bool,
) -> list[Candidate]:
    """Raise DuplicateContact unless ``allow``; serialise concurrent saves of the same keys."""
    keys = _dup_keys(values)
    for name, key in sorted(keys.items()):
        # Two operators saving the same phone at once: the second waits and sees the first.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"herald:contact:{name}:{key}"
        )
    found = await find_duplicates(
        conn,
        exclude_contact_id=contact_id,
        client_id=client_id,
        **{("passport" if k == "passport_number" else k): values[k] for k in keys},
    )
    if found and not allow:
        raise DuplicateContact(found)
    return found


def _duplicate_note(contact_id: int, found: Iterable[Candidate]) -> list[Change]:
    listed = [{"kind": c.kind, "id": c.id, "matched": c.matched} for c in found]
    return (
        [Change("contact", str(contact_id), "allow_duplicate", "duplicate_of", None, listed)]
        if listed
        else []
    )


# -- create and edit -------------------------------------------------------------------


async def create_contact(
    conn: asyncpg.Connection,
    actor: Actor,
    *,
    client_id: int,
    fields: Mapping[str, Any],
    links: Sequence[tuple[int, str]] = (),
    allow_duplicate: bool = False,
) -> Contact:
    """A new active contact of ``client_id``, optionally linked to accounts at once."""
    values = {name: _clean(name, fields.get(name)) for name in FIELDS}
    if values["phone"] is None and values["email"] is None:
        raise InvalidInput("phone", "a contact needs a phone or an e-mail")
    account_ids = [account_id for account_id, _ in links]
    for i, account_id in enumerate(account_ids):
        if account_id in account_ids[:i]:
            raise InvalidInput(f"links[{i}].account_id", f"account {account_id} is listed twice")
    async with conn.transaction():
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM clients WHERE id = $1)", client_id
        ):
            raise InvalidInput("client_id", f"client {client_id} does not exist")
        known = {
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM accounts WHERE id = ANY($1::bigint[])", account_ids
            )
        }
        for i, account_id in enumerate(account_ids):
            if account_id not in known:
                raise InvalidInput(f"links[{i}].account_id", f"account {account_id} does not exist")
        found = await _check_duplicates(conn, None, client_id, values, allow=allow_duplicate)
        contact_id = await conn.fetchval(
            """INSERT INTO contacts (client_id, last_name, first_name, middle_name, phone, email,
                                     passport_number, passport_norm)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id""",
            client_id,
            *(values[f] for f in FIELDS),
            passport_norm(values["passport_number"]) if values["passport_number"] else None,
        )
        await conn.executemany(
            "INSERT INTO account_contacts (account_id, contact_id, role) VALUES ($1, $2, $3)",
            [(account_id, contact_id, role) for account_id, role in links],
        )
        entity = str(contact_id)
        changes = [Change("contact", entity, "create", "client_id", None, client_id)]
        changes += [
            Change("contact", entity, "create", f, None, values[f])
            for f in FIELDS
            if values[f] is not None
        ]
        changes += [Change("contact", entity, "link", f"link:{a}", None, role) for a, role in links]
        await audit.record(conn, actor, changes + _duplicate_note(contact_id, found))
        return await get_contact(conn, contact_id)


async def _locked(conn: asyncpg.Connection, contact_id: int) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM contacts WHERE id = $1 FOR UPDATE", contact_id)
    if row is None:
        raise NotFound(f"contact {contact_id} does not exist")
    return row


async def update_contact(
    conn: asyncpg.Connection,
    actor: Actor,
    contact_id: int,
    changes: Mapping[str, Any],
    *,
    allow_duplicate: bool = False,
) -> Contact:
    """Change names, phone, e-mail, passport or activity; ``changes`` holds only what was sent."""
    asked = {
        name: _clean(name, value)
        for name, value in changes.items()
        if name in FIELDS or name == "is_active"
    }
    async with conn.transaction():
        row = await _locked(conn, contact_id)
        old = {name: row[name] for name in (*FIELDS, "is_active")}
        new = {**old, **asked}
        if new["phone"] is None and new["email"] is None:
            raise InvalidInput(
                "phone" if "phone" in asked else "email", "a contact keeps a phone or an e-mail"
            )
        if row["merged_into"] is not None and new["is_active"]:
            raise Conflict(
                f"contact {contact_id} was merged into {row['merged_into']}; "
                "edit that contact instead"
            )
        changed = {name: value for name, value in asked.items() if old[name] != value}
        if not changed:
            return await get_contact(conn, contact_id)
        # An inactive contact is nobody's duplicate; a reactivated one is checked whole.
        check = (
            {}
            if not new["is_active"]
            else {f: new[f] for f in ("phone", "email", "passport_number")}
            if not old["is_active"]
            else changed
        )
        found = await _check_duplicates(
            conn,
            contact_id,
            row["client_id"],
            {k: v for k, v in check.items() if v is not None},
            allow=allow_duplicate,
        )
        await conn.execute(
            """UPDATE contacts SET last_name = $2, first_name = $3, middle_name = $4, phone = $5,
                   email = $6, passport_number = $7, passport_norm = $8, is_active = $9,
                   updated_at = herald_now()
               WHERE id = $1""",
            contact_id,
            *(new[f] for f in FIELDS),
            passport_norm(new["passport_number"]) if new["passport_number"] else None,
            new["is_active"],
        )
        await audit.record(
            conn,
            actor,
            audit.field_changes("contact", contact_id, old, changed)
            + _duplicate_note(contact_id, found),
        )
        return await get_contact(conn, contact_id)


# -- links -----------------------------------------------------------------------------

_LINK_ROW = "SELECT * FROM account_contacts WHERE account_id = $1 AND contact_id = $2 FOR UPDATE"


async def _link_of(conn: asyncpg.Connection, contact_id: int, account_id: int) -> Link:
    contact = await get_contact(conn, contact_id)
    return next(link for link in contact.links if link.account_id == account_id)


async def set_link(
    conn: asyncpg.Connection, actor: Actor, contact_id: int, account_id: int, role: str
) -> Link:
    """Link the contact to the account with ``role``, re-link it, or change the role."""
    async with conn.transaction():
        contact = await _locked(conn, contact_id)
        if not contact["is_active"]:
            raise Conflict(f"contact {contact_id} is inactive; reactivate it before linking")
        if not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM accounts WHERE id = $1)", account_id
        ):
            raise NotFound(f"account {account_id} does not exist")
        row = await conn.fetchrow(_LINK_ROW, account_id, contact_id)
        field = f"link:{account_id}"
        if row is None:
            await conn.execute(
                "INSERT INTO account_contacts (account_id, contact_id, role) VALUES ($1, $2, $3)",
                account_id,
                contact_id,
                role,
            )
            change = Change("contact", str(contact_id), "link", field, None, role)
        elif not row["is_active"]:
            await conn.execute(
                "UPDATE account_contacts SET is_active = true, unlinked_at = NULL, role = $3 "
                "WHERE account_id = $1 AND contact_id = $2",
                account_id,
                contact_id,
                role,
            )
            change = Change("contact", str(contact_id), "link", field, None, role)
        elif row["role"] != role:
            await conn.execute(
                "UPDATE account_contacts SET role = $3 WHERE account_id = $1 AND contact_id = $2",
                account_id,
                contact_id,
                role,
            )
            change = Change("contact", str(contact_id), "update", field, row["role"], role)
        else:
            return await _link_of(conn, contact_id, account_id)
        await audit.record(conn, actor, [change])
        return await _link_of(conn, contact_id, account_id)


async def unlink(conn: asyncpg.Connection, actor: Actor, contact_id: int, account_id: int) -> Link:
    """Break the link (kept as an inactive row with unlinked_at); idempotent."""
    async with conn.transaction():
        await _locked(conn, contact_id)
        row = await conn.fetchrow(_LINK_ROW, account_id, contact_id)
        if row is None:
            raise NotFound(f"contact {contact_id} is not linked to account {account_id}")
        if row["is_active"]:
            await conn.execute(
                "UPDATE account_contacts SET is_active = false, unlinked_at = herald_now() "
                "WHERE account_id = $1 AND contact_id = $2",
                account_id,
                contact_id,
            )
            await audit.record(
                conn,
                actor,
                [
                    Change(
                        "contact",
                        str(contact_id),
                        "unlink",
                        f"link:{account_id}",
                        row["role"],
                        None,
                    )
                ],
            )
        return await _link_of(conn, contact_id, account_id)


# -- merge -----------------------------------------------------------------------------


async def merge_contacts(
    conn: asyncpg.Connection, actor: Actor, source_id: int, into_id: int
) -> MergeResult:
    """Merge ``source_id`` into ``into_id``: move its active links, fill empty fields, retire it."""
    if source_id == into_id:
        raise InvalidInput("into", "a contact cannot be merged into itself")
    async with conn.transaction():
        rows = {
            r["id"]: r
            for r in await conn.fetch(
                "SELECT * FROM contacts WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE",
                [source_id, into_id],
            )
        }
        if source_id not in rows:
            raise NotFound(f"contact {source_id} does not exist")
        if into_id not in rows:
            raise InvalidInput("into", f"contact {into_id} does not exist")
        source, into = rows[source_id], rows[into_id]
        if source["merged_into"] is not None:
            raise Conflict(f"contact {source_id} was already merged into {source['merged_into']}")
        if into["merged_into"] is not None:
            raise Conflict(
                f"contact {into_id} was merged into {into['merged_into']}; merge into that contact"
            )
        if not into["is_active"]:
            raise Conflict(f"contact {into_id} is inactive; reactivate it before merging into it")
        src, dst = str(source_id), str(into_id)
        changes = [
            Change("contact", src, "merge", "merged_into", None, into_id),
            Change("contact", dst, "merge", "merged_from", None, source_id),
        ]
        if source["is_active"]:
            changes.append(Change("contact", src, "merge", "is_active", True, False))
        filled = [f for f in FIELDS if into[f] is None and source[f] is not None]
        changes += [Change("contact", dst, "merge", f, None, source[f]) for f in filled]
        outcomes = await _move_links(conn, source_id, into_id, changes)
        await conn.execute(
            """UPDATE contacts d SET last_name = coalesce(d.last_name, s.last_name),
                   first_name = coalesce(d.first_name, s.first_name),
                   middle_name = coalesce(d.middle_name, s.middle_name),
                   phone = coalesce(d.phone, s.phone), email = coalesce(d.email, s.email),
                   passport_norm = CASE WHEN d.passport_number IS NULL THEN s.passport_norm
                                        ELSE d.passport_norm END,
                   passport_number = coalesce(d.passport_number, s.passport_number),
                   updated_at = herald_now()
               FROM contacts s WHERE d.id = $2 AND s.id = $1""",
            source_id,
            into_id,
        )
        await conn.execute(
            "UPDATE contacts SET is_active = false, merged_into = $2, updated_at = herald_now() "
            "WHERE id = $1",
            source_id,
            into_id,
        )
        await audit.record(conn, actor, changes)
        return MergeResult(
            await get_contact(conn, into_id), await get_contact(conn, source_id), filled, outcomes
        )


async def _move_links(
    conn: asyncpg.Connection, source_id: int, into_id: int, changes: list[Change]
) -> list[MergedLink]:
    """Give the survivor every active link of the merged contact; journal into ``changes``."""
    rows = await conn.fetch(
        "SELECT * FROM account_contacts WHERE contact_id = ANY($1::bigint[]) "
        "ORDER BY account_id, contact_id FOR UPDATE",
        [source_id, into_id],
    )
    theirs = {r["account_id"]: r for r in rows if r["contact_id"] == into_id}
    outcomes: list[MergedLink] = []
    src, dst = str(source_id), str(into_id)
    for link in (r for r in rows if r["contact_id"] == source_id and r["is_active"]):
        account, role = link["account_id"], link["role"]
        field, other = f"link:{account}", theirs.get(account)
        if other is None:
            await conn.execute(
                "INSERT INTO account_contacts (account_id, contact_id, role, linked_at) "
                "VALUES ($1, $2, $3, $4)",
                account,
                into_id,
                role,
                link["linked_at"],
            )
            changes.append(Change("contact", dst, "merge", field, None, role))
            outcomes.append(MergedLink(account, role, "moved"))
        elif not other["is_active"]:
            await conn.execute(
                "UPDATE account_contacts SET is_active = true, unlinked_at = NULL, role = $3 "
                "WHERE account_id = $1 AND contact_id = $2",
                account,
                into_id,
                role,
            )
            changes.append(Change("contact", dst, "merge", field, None, role))
            outcomes.append(MergedLink(account, role, "reactivated"))
        elif ROLE_STRENGTH[role] > ROLE_STRENGTH[other["role"]]:
            await conn.execute(
                "UPDATE account_contacts SET role = $3 WHERE account_id = $1 AND contact_id = $2",
                account,
                into_id,
                role,
            )
            changes.append(Change("contact", dst, "merge", field, other["role"], role))
            outcomes.append(
                MergedLink(
                    account,
                    role,
                    "role_upgraded",
                    f"both were linked; the stronger role {role} replaced {other['role']}",
                )
            )
        elif ROLE_STRENGTH[role] < ROLE_STRENGTH[other["role"]]:
            outcomes.append(
                MergedLink(
                    account,
                    other["role"],
                    "kept_stronger_role",
                    f"both were linked; the stronger role {other['role']} was kept over {role}",
                )
            )
        else:
            outcomes.append(MergedLink(account, role, "already_linked"))
        changes.append(Change("contact", src, "merge", field, role, None))
    await conn.execute(
        "UPDATE account_contacts SET is_active = false, unlinked_at = herald_now() "
        "WHERE contact_id = $1 AND is_active",
        source_id,
    )
    return outcomes
