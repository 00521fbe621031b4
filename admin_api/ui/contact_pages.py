"""The contacts block of the card: create, edit (journalled), deactivate, link to accounts
with a role, change the role, unlink, and the duplicate warning with merge (CM-01, CM-03)."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from admin_api.routing import EndpointTable, path_int
from admin_api.security import actor
from admin_api.typedefs import DB
from admin_api.ui import forms
from admin_api.ui.rendering import render
from crm import card as cards
from crm import contacts
from crm.contacts import DuplicateContact
from herald.bounds import Id

endpoints = EndpointTable("ui")

ROLES = ("owner", "co_owner", "billing_contact")


class ContactForm(msgspec.Struct):
    last_name: str | None = None
    first_name: str | None = None
    middle_name: str | None = None
    phone: str | None = None
    email: str | None = None
    account_id: Id | None = None
    role: str = "billing_contact"
    allow_duplicate: bool = False


class LinkForm(msgspec.Struct):
    account_id: Id
    role: str = "billing_contact"


class MergeForm(msgspec.Struct):
    into: Id


async def contacts_block(request: web.Request, client_id: int, **extra: Any) -> web.Response:
    """The client's contacts block as it is now; ``HX-Trigger`` reloads the history."""
    async with request.app[DB].acquire() as conn:
        items = await contacts.client_contacts(conn, client_id)
        accounts = await cards.client_accounts(conn, client_id)
    return await render(
        request,
        "_contacts.html",
        {
            "client_id": client_id,
            "contacts_list": items,
            "account_choices": [(a.account_id, a.or_number) for a in accounts],
            "roles": ROLES,
            "duplicates": None,
            "draft": None,
            **extra,
        },
        headers={"HX-Trigger": "herald:history"},
    )


def _changes(body: ContactForm, *, blank_is_none: bool) -> dict[str, Any]:
    names = ("last_name", "first_name", "middle_name", "phone", "email")
    return {n: getattr(body, n) for n in names if blank_is_none or getattr(body, n) is not None}


@endpoints.post(
    r"/ui/clients/{client_id:\d+}/contacts",
    permission="clients.manage",
    response=str,
    media_type="text/html",
    errors=(400, 404),
)
async def create(request: web.Request) -> web.Response:
    """Create a contact of this client, linked to one of its accounts with a role."""
    client_id = path_int(request, "client_id")
    body = await forms.form(request, ContactForm)
    links = [(body.account_id, body.role)] if body.account_id else []
    try:
        async with request.app[DB].acquire() as conn:
            await contacts.create_contact(
                conn,
                actor(request),
                client_id=client_id,
                fields=_changes(body, blank_is_none=False),
                links=links,
                allow_duplicate=body.allow_duplicate,
            )
    except DuplicateContact as error:
        return await contacts_block(
            request, client_id, duplicates=error.candidates, draft=body, draft_contact_id=None
        )
    return await contacts_block(request, client_id, saved=True)


@endpoints.post(
    r"/ui/clients/{client_id:\d+}/contacts/{contact_id:\d+}",
    permission="clients.manage",
    response=str,
    media_type="text/html",
    errors=(400, 404),
)
async def edit(request: web.Request) -> web.Response:
    """Edit a contact's names, phone and e-mail; each changed field is journalled."""
    client_id, contact_id = path_int(request, "client_id"), path_int(request, "contact_id")
    body = await forms.form(request, ContactForm)
    try:
        async with request.app[DB].acquire() as conn:
            await contacts.update_contact(
                conn,
                actor(request),
                contact_id,
                _changes(body, blank_is_none=True),
                allow_duplicate=body.allow_duplicate,
            )
    except DuplicateContact as error:
        return await contacts_block(
            request, client_id, duplicates=error.candidates, draft=body, draft_contact_id=contact_id
        )
    return await contacts_block(request, client_id, saved=True)


@endpoints.post(
    r"/ui/clients/{client_id:\d+}/contacts/{contact_id:\d+}/active",
    permission="clients.manage",
    response=str,
    media_type="text/html",
    errors=(400, 404),
)
async def set_active(request: web.Request) -> web.Response:
    """Deactivate a contact (nothing is deleted), or activate it again."""
    client_id, contact_id = path_int(request, "client_id"), path_int(request, "contact_id")
    active = (await request.post()).get("active") == "true"
    async with request.app[DB].acquire() as conn:
        await contacts.update_contact(conn, actor(request), contact_id, {"is_active": active})
    return await contacts_block(request, client_id, saved=True)


@endpoints.post(
    r"/ui/clients/{client_id:\d+}/contacts/{contact_id:\d+}/links",
    permission="clients.manage",
    response=str,
    media_type="text/html",
    errors=(400, 404, 409),
)
async def link(request: web.Request) -> web.Response:
    """Link the contact to an account with a role, or change the role of its link."""
    client_id, contact_id = path_int(request, "client_id"), path_int(request, "contact_id")
    body = await forms.form(request, LinkForm)
    async with request.app[DB].acquire() as conn:
        await contacts.set_link(conn, actor(request), contact_id, body.account_id, body.role)
    return await contacts_block(request, client_id, saved=True)


@endpoints.post(
    r"/ui/clients/{client_id:\d+}/contacts/{contact_id:\d+}/unlink/{account_id:\d+}",
    permission="clients.manage",
    response=str,
    media_type="text/html",
    errors=(404,),
)
async def unlink(request: web.Request) -> web.Response:
    """Break a link (kept, inactive); the contact and its history stay."""
    client_id, contact_id = path_int(request, "client_id"), path_int(request, "contact_id")
    async with request.app[DB].acquire() as conn:
        await contacts.unlink(conn, actor(request), contact_id, path_int(request, "account_id"))
    return await contacts_block(request, client_id, saved=True)


@endpoints.post(
    r"/ui/clients/{client_id:\d+}/contacts/{contact_id:\d+}/merge",
    permission="contacts.merge",
    response=str,
    media_type="text/html",
    errors=(400, 404, 409),
)
async def merge(request: web.Request) -> web.Response:
    """Merge this contact into a duplicate: links move, empty fields fill, this one retires."""
    client_id, contact_id = path_int(request, "client_id"), path_int(request, "contact_id")
    body = await forms.form(request, MergeForm)
    async with request.app[DB].acquire() as conn:
        await contacts.merge_contacts(conn, actor(request), contact_id, body.into)
    return await contacts_block(request, client_id, saved=True)
