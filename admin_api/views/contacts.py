"""Contacts, their links to accounts, duplicates, merge and mass edit (issue 4, points 3-4).

Passport numbers are masked (КА****56) for roles without ``clients.pii``, in contacts and
in their history alike. A save that would duplicate an active contact's phone, e-mail or
passport (or a client's passport) answers 409 with the ``candidates``, unless the request
says ``"allow_duplicate": true``. History: ``GET /api/v1/contacts/{id}/history`` (also
``/api/v1/audit/contact/{id}``); links are journalled on the contact as ``link:<account_id>``.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from aiohttp import web

from admin_api.problems import PROBLEM_CONTENT_TYPE
from admin_api.routing import EndpointTable, path_int
from admin_api.security import actor, principal
from admin_api.typedefs import DB, REQUEST_ID
from admin_api.views.audit import (
    HistoryPage,
    HistoryQuery,
    _decode_cursor,
    _encode_cursor,
)
from crm import audit, contacts, mass_edit, pii
from crm.contacts import Candidate, Contact, DuplicateContact, Link, MergeResult, Role
from crm.mass_edit import MAX_SELECTION, AccountChanges, AccountFilter, MassEditReport
from herald.errors import InvalidInput

endpoints = EndpointTable("contacts")

PII = pii.PERMISSION
Id = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
Name = Annotated[str, msgspec.Meta(max_length=100)]
Phone = Annotated[str, msgspec.Meta(max_length=40)]
Email = Annotated[str, msgspec.Meta(max_length=254)]
Passport = Annotated[str, msgspec.Meta(max_length=20)]


class LinkSpec(msgspec.Struct, forbid_unknown_fields=True):
    account_id: Id
    role: Role


class ContactCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new contact of a client: a phone or an e-mail at least; links optional."""

    client_id: Id
    last_name: Name | None = None
    first_name: Name | None = None
    middle_name: Name | None = None
    phone: Phone | None = None
    email: Email | None = None
    passport_number: Passport | None = None
    links: Annotated[list[LinkSpec], msgspec.Meta(max_length=50)] = []
    allow_duplicate: bool = False


class ContactPatch(msgspec.Struct, forbid_unknown_fields=True):
    """Only the fields sent change; null (or "") clears a field; is_active false deactivates."""

    last_name: Name | msgspec.UnsetType | None = msgspec.UNSET
    first_name: Name | msgspec.UnsetType | None = msgspec.UNSET
    middle_name: Name | msgspec.UnsetType | None = msgspec.UNSET
    phone: Phone | msgspec.UnsetType | None = msgspec.UNSET
    email: Email | msgspec.UnsetType | None = msgspec.UNSET
    passport_number: Passport | msgspec.UnsetType | None = msgspec.UNSET
    is_active: bool | msgspec.UnsetType = msgspec.UNSET
    allow_duplicate: bool = False


class LinkRole(msgspec.Struct, forbid_unknown_fields=True):
    role: Role


class MergeRequest(msgspec.Struct, forbid_unknown_fields=True):
    into: Id


class ClientContacts(msgspec.Struct):
    client_id: int
    items: list[Contact]


class ClientContactsQuery(msgspec.Struct, forbid_unknown_fields=True):
    active_only: bool = False


class DuplicateQuery(msgspec.Struct, forbid_unknown_fields=True):
    phone: Phone | None = None
    email: Email | None = None
    passport: Passport | None = None
    # The contact being edited, and its client (whose own passport is not a duplicate).
    exclude_contact_id: Id | None = None
    client_id: Id | None = None


class Candidates(msgspec.Struct):
    candidates: list[Candidate]


class DuplicateProblem(msgspec.Struct):
    """The 409 problem of a save that would create a duplicate, with the candidates."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    request_id: str
    candidates: list[Candidate]


class MassEditRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Exactly one selection (account_ids, client_ids or filter), the changes, optional dry run."""

    set: AccountChanges
    account_ids: (
        Annotated[list[Id], msgspec.Meta(min_length=1, max_length=MAX_SELECTION)] | None
    ) = None
    client_ids: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=MAX_SELECTION)] | None = (
        None
    )
    filter: AccountFilter | None = None
    dry_run: bool = False


_encoder = msgspec.json.Encoder()


def _duplicates(request: web.Request, error: DuplicateContact) -> web.Response:
    body = DuplicateProblem(
        type=f"/problems/{error.code}",
        title="Conflict",
        status=409,
        detail=error.detail,
        instance=request.path,
        request_id=request.get(REQUEST_ID, ""),
        candidates=error.candidates,
    )
    return web.Response(body=_encoder.encode(body), status=409, content_type=PROBLEM_CONTENT_TYPE)


def _shown(request: web.Request, contact: Contact) -> Contact:
    if PII in principal(request).permissions:
        return contact
    return msgspec.structs.replace(
        contact, passport_number=contacts.mask_passport(contact.passport_number)
    )


def _fields(body: msgspec.Struct) -> dict[str, Any]:
    return {
        f: getattr(body, f)
        for f in contacts.FIELDS
        if getattr(body, f, msgspec.UNSET) is not msgspec.UNSET
    }


# The fixed path goes first so that {contact_id} never swallows "duplicates".
@endpoints.get(
    "/api/v1/contacts/duplicates",
    permission="clients.read",
    query=DuplicateQuery,
    response=Candidates,
    errors=(400,),
)
async def check_duplicates(request: web.Request, query: DuplicateQuery) -> Candidates:
    """Contacts (and clients) that a contact with these phone / e-mail / passport would duplicate."""
    if query.phone is None and query.email is None and query.passport is None:
        raise InvalidInput("phone", "give a phone, an e-mail or a passport to check")
    phone = contacts.normalise_phone(query.phone) if query.phone else None
    email = contacts.normalise_email(query.email) if query.email else None
    passport = query.passport
    if passport:
        contacts.passport_norm(passport, "passport")
    async with request.app[DB].acquire() as conn:
        found = await contacts.find_duplicates(
            conn,
            phone=phone,
            email=email,
            passport=passport,
            exclude_contact_id=query.exclude_contact_id,
            client_id=query.client_id,
        )
    return Candidates(found)


@endpoints.post(
    "/api/v1/contacts",
    permission="clients.manage",
    body=ContactCreate,
    response=Contact,
    status=201,
    errors=(400, 409),
)
async def create_contact(request: web.Request, body: ContactCreate) -> Any:
    """Create a contact card of a client (409 with candidates when it duplicates someone)."""
    async with request.app[DB].acquire() as conn:
        try:
            created = await contacts.create_contact(
                conn,
                actor(request),
                client_id=body.client_id,
                fields=_fields(body),
                links=[(link.account_id, link.role) for link in body.links],
                allow_duplicate=body.allow_duplicate,
            )
        except DuplicateContact as error:
            return _duplicates(request, error)
    return _shown(request, created)


@endpoints.get(
    "/api/v1/contacts/{contact_id}", permission="clients.read", response=Contact, errors=(404,)
)
async def get_contact(request: web.Request) -> Contact:
    """One contact with all its links, active and broken."""
    async with request.app[DB].acquire() as conn:
        return _shown(request, await contacts.get_contact(conn, path_int(request, "contact_id")))


@endpoints.patch(
    "/api/v1/contacts/{contact_id}",
    permission="clients.manage",
    body=ContactPatch,
    response=Contact,
    errors=(400, 404, 409),
)
async def update_contact(request: web.Request, body: ContactPatch) -> Any:
    """Edit names, phone, e-mail, passport; deactivate or reactivate (every change journalled)."""
    changes = _fields(body)
    if body.is_active is not msgspec.UNSET:
        changes["is_active"] = body.is_active
    async with request.app[DB].acquire() as conn:
        try:
            updated = await contacts.update_contact(
                conn,
                actor(request),
                path_int(request, "contact_id"),
                changes,
                allow_duplicate=body.allow_duplicate,
            )
        except DuplicateContact as error:
            return _duplicates(request, error)
    return _shown(request, updated)


@endpoints.get(
    "/api/v1/clients/{client_id}/contacts",
    permission="clients.read",
    query=ClientContactsQuery,
    response=ClientContacts,
    errors=(404,),
)
async def client_contacts(request: web.Request, query: ClientContactsQuery) -> ClientContacts:
    """The client's contacts and those linked to its accounts, with roles; inactive ones too."""
    client_id = path_int(request, "client_id")
    async with request.app[DB].acquire() as conn:
        items = await contacts.client_contacts(conn, client_id, active_only=query.active_only)
    return ClientContacts(client_id, [_shown(request, c) for c in items])


@endpoints.put(
    "/api/v1/contacts/{contact_id}/links/{account_id}",
    permission="clients.manage",
    body=LinkRole,
    response=Link,
    errors=(400, 404, 409),
)
async def set_link(request: web.Request, body: LinkRole) -> Link:
    """Link the contact to an account with a role, re-link it, or change the role."""
    async with request.app[DB].acquire() as conn:
        return await contacts.set_link(
            conn,
            actor(request),
            path_int(request, "contact_id"),
            path_int(request, "account_id"),
            body.role,
        )


@endpoints.delete(
    "/api/v1/contacts/{contact_id}/links/{account_id}",
    permission="clients.manage",
    response=Link,
    errors=(404,),
)
async def unlink(request: web.Request) -> Link:
    """Break the link: it stays, inactive, with unlinked_at; PUT re-links it."""
    async with request.app[DB].acquire() as conn:
        return await contacts.unlink(
            conn, actor(request), path_int(request, "contact_id"), path_int(request, "account_id")
        )


@endpoints.post(
    "/api/v1/contacts/{contact_id}/merge",
    permission="contacts.merge",
    body=MergeRequest,
    response=MergeResult,
    errors=(400, 404, 409),
)
async def merge(request: web.Request, body: MergeRequest) -> MergeResult:
    """Merge this contact into another: links move, empty fields fill, this one retires."""
    async with request.app[DB].acquire() as conn:
        result = await contacts.merge_contacts(
            conn, actor(request), path_int(request, "contact_id"), body.into
        )
    return msgspec.structs.replace(
        result, survivor=_shown(request, result.survivor), merged=_shown(request, result.merged)
    )


@endpoints.get(
    "/api/v1/contacts/{contact_id}/history",
    permission="clients.read",
    query=HistoryQuery,
    response=HistoryPage,
    errors=(400, 404),
)
async def history(request: web.Request, query: HistoryQuery) -> HistoryPage:
    """Every change of the contact and of its links and merges, newest first (keyset pages)."""
    contact_id = path_int(request, "contact_id")
    before = _decode_cursor(query.cursor) if query.cursor else None
    async with request.app[DB].acquire() as conn:
        await contacts.get_contact(conn, contact_id)
        items = await audit.history(
            conn,
            "contact",
            str(contact_id),
            limit=query.limit,
            pii_visible=PII in principal(request).permissions,
            before=before,
        )
    return HistoryPage(
        items=items, next_cursor=_encode_cursor(items[-1]) if len(items) == query.limit else None
    )


@endpoints.post(
    "/api/v1/accounts/mass-edit",
    permission="clients.mass_edit",
    body=MassEditRequest,
    response=MassEditReport,
    errors=(400, 409),
)
async def mass_edit_accounts(request: web.Request, body: MassEditRequest) -> MassEditReport:
    """Change attributes of many accounts at once (<= 100,000), journalled per record and field."""
    async with request.app[DB].acquire() as conn:
        return await mass_edit.mass_edit(
            conn,
            actor(request),
            changes=body.set,
            account_ids=body.account_ids,
            client_ids=body.client_ids,
            account_filter=body.filter,
            dry_run=body.dry_run,
        )
