"""The client search page: results as you type, one quick box or several fields (AND/OR)."""

from __future__ import annotations

import re

import msgspec
from aiohttp import web

from admin_api.routing import EndpointTable, decode_query
from admin_api.typedefs import DB
from admin_api.ui import forms
from admin_api.ui.mass_edit_pages import ACCOUNT_STATUSES, CONSUMER_TYPES
from admin_api.ui.rendering import render
from admin_api.views.search import SearchQuery, run_search
from herald.errors import InvalidInput

endpoints = EndpointTable("ui")

_EIC = re.compile(r"^[0-9]{2}[A-Z][A-Z0-9-]{12}[A-Z0-9]$")
_PHONE = re.compile(r"^\+?[0-9()\s-]{5,20}$")


class SearchForm(msgspec.Struct):
    """The quick box ``q`` (its kind guessed) and the fields of the detailed search."""

    q: str | None = None
    phone: str | None = None
    or_number: str | None = msgspec.field(name="or", default=None)
    client_id: str | None = None
    eic: str | None = None
    address: str | None = None
    name: str | None = None
    match: str = "all"
    cursor: str | None = None


def guess(q: str) -> dict[str, str]:
    """What the quick box holds: an OR (10 digits), Client_ID (shorter digits), a phone
    (+, or 0/380 and enough digits), an EIC, else a name."""
    text = q.strip()
    digits = re.sub(r"[\s()-]", "", text)
    if _EIC.match(text.upper().replace(" ", "")):
        return {"eic": text}
    if digits.isdigit() and len(digits) == 10 and not digits.startswith("0"):
        return {"or_number": digits}
    if (
        digits.lstrip("+").isdigit()
        and _PHONE.match(text)
        and (text.startswith("+") or digits.startswith(("0", "380")) or len(digits) >= 7)
    ):
        return {"phone": text}
    if digits.isdigit() and len(digits) < 10:
        return {"client_id": digits}
    return {"name": text}


def to_query(form: SearchForm) -> SearchQuery | None:
    """The API's search query of the form, or None when nothing is typed yet."""
    fields = {
        k: getattr(form, k)
        for k in ("phone", "or_number", "client_id", "eic", "address", "name")
        if getattr(form, k)
    }
    if form.q:
        fields.update(guess(form.q))
    if not fields:
        return None
    if "client_id" in fields:
        if not fields["client_id"].isdigit():
            raise InvalidInput("client_id", "a Client_ID is a number")
        fields["client_id"] = int(fields["client_id"])
    if "or_number" in fields:
        fields["or"] = fields.pop("or_number")
    return decode_query(
        {
            **fields,
            "match": form.match if form.match in ("all", "any") else "all",
            "cursor": form.cursor,
            "limit": 20,
        },
        SearchQuery,
    )


async def _results(request: web.Request, form: SearchForm) -> dict[str, object]:
    try:
        query = to_query(form)
        page = await run_search(request.app[DB], query) if query is not None else None
        return {"page": page, "error": None, "form": form}
    except InvalidInput as bad:
        return {"page": None, "error": bad, "form": form}


@endpoints.get("/ui/search", permission="clients.read", response=str, media_type="text/html")
async def search_page(request: web.Request) -> web.Response:
    """The search page (with results when the query string has criteria)."""
    form = forms.query(request, SearchForm)
    return await render(
        request,
        "search.html",
        {
            **await _results(request, form),
            "consumer_types": CONSUMER_TYPES,
            "account_statuses": ACCOUNT_STATUSES,
        },
    )


@endpoints.get(
    "/ui/search/results", permission="clients.read", response=str, media_type="text/html"
)
async def search_results(request: web.Request) -> web.Response:
    """The results fragment, fetched as the operator types; the next page (a cursor) is
    only its rows, which extend the same table."""
    form = forms.query(request, SearchForm)
    found = await _results(request, form)
    if form.cursor and found["page"] is not None:
        return await render(request, "_search_rows.html", found)
    return await render(request, "_search_results.html", found)
