"""Mass edit of accounts picked in the search results, with a dry-run preview (CM-03)."""

from __future__ import annotations

import msgspec
from aiohttp import web

from admin_api.routing import EndpointTable, decode_query
from admin_api.security import actor
from admin_api.typedefs import DB
from admin_api.ui import forms
from admin_api.ui.rendering import render
from crm import mass_edit
from crm.mass_edit import AccountChanges
from herald.bounds import Id
from herald.errors import InvalidInput

endpoints = EndpointTable("ui")

CONSUMER_TYPES = ("household", "household_heating", "condominium", "religious", "budget")
ACCOUNT_STATUSES = ("active", "suspended", "closed")


class MassEditForm(msgspec.Struct):
    account_ids: list[Id] = []
    consumer_type: str | None = None
    registers_add: str | None = None
    registers_remove: str | None = None
    destroyed_housing: str | None = None
    status: str | None = None
    apply: str | None = None


def _words(text: str | None) -> list[str] | None:
    found = [w.strip() for w in (text or "").replace(";", ",").split(",") if w.strip()]
    return found or None


def changes_of(form: MassEditForm) -> AccountChanges:
    """The API's typed changes from the form (a bad value is a 400 naming the field)."""
    raw: dict[str, object] = {
        "consumer_type": form.consumer_type,
        "status": form.status,
        "registers_add": _words(form.registers_add),
        "registers_remove": _words(form.registers_remove),
        "destroyed_housing": {"yes": True, "no": False}.get(form.destroyed_housing or ""),
    }
    changes = decode_query({k: v for k, v in raw.items() if v is not None}, AccountChanges)
    if changes == AccountChanges():
        raise InvalidInput("set", "choose at least one attribute to change")
    return changes


@endpoints.post(
    "/ui/accounts/mass-edit",
    permission="clients.mass_edit",
    response=str,
    media_type="text/html",
    errors=(400,),
)
async def mass_edit_accounts(request: web.Request) -> web.Response:
    """Preview (dry run) or apply the changes to the accounts ticked in the results."""
    form = await forms.form(request, MassEditForm, lists=("account_ids",))
    if not form.account_ids:
        raise InvalidInput("account_ids", "tick the accounts to change in the results")
    dry_run = form.apply != "true"
    async with request.app[DB].acquire() as conn:
        report = await mass_edit.mass_edit(
            conn,
            actor(request),
            changes=changes_of(form),
            account_ids=form.account_ids,
            client_ids=None,
            account_filter=None,
            dry_run=dry_run,
        )
    return await render(request, "_mass_edit_report.html", {"report": report})
