"""The Client 360 card and the billing connector's refresh (issue 4, points 1-2).

``GET /api/v1/clients/{client_id}`` and ``GET /api/v1/accounts/by-or/{or_number}`` give
the same card. Billing data older than ``HERALD_BILLING_MAX_AGE_SECONDS`` (or with
``?refresh=true``) is refreshed while the card is read; the card waits at most
``HERALD_BILLING_TIMEOUT_SECONDS`` and otherwise shows the cached data marked
``stale`` while the refresh completes in the background. A billing failure never
fails the card.

``POST /api/v1/clients/{client_id}/billing/refresh`` is the operator's explicit refresh:
it waits for billing (up to its request timeout) and answers the fresh billing blocks,
or a 503 problem ``billing-unavailable`` when billing is down or failing, or a 504
problem ``billing-timeout`` when it does not answer in time. Accounts that were
refreshed are stored either way.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator

import aiohttp
import msgspec
from aiohttp import web

from admin_api.problems import problem_response
from admin_api.routing import EndpointTable, path_int
from admin_api.security import principal
from admin_api.typedefs import DB, SETTINGS
from crm import card as cards
from crm.billing import BillingBlock, BillingCache
from crm.meters import record_billing_readings
from herald.errors import InvalidInput
from providers.billing import Equipment, HttpBillingConnector

BILLING = web.AppKey("billing_cache", BillingCache)
BILLING_SESSION = web.AppKey("billing_session", aiohttp.ClientSession)
_OR_NUMBER = re.compile(r"^[0-9]{10}$")


async def billing_context(app: web.Application) -> AsyncIterator[None]:
    """The billing cache, opened after the database pool and closed before it (its
    background refreshes use the pool): a cleanup context of ``init_app``."""
    settings = app[SETTINGS]
    session = aiohttp.ClientSession()
    app[BILLING_SESSION] = session
    connector = HttpBillingConnector(session, settings.billing_url, settings.provider_api_token)
    app[BILLING] = BillingCache(
        connector,
        app[DB],
        max_age_seconds=settings.billing_max_age_seconds,
        wait_seconds=settings.billing_timeout_seconds,
        record_readings=record_billing_readings,
    )
    try:
        yield
    finally:
        await app[BILLING].close()
        await session.close()


endpoints = EndpointTable("clients")


class CardQuery(msgspec.Struct, forbid_unknown_fields=True):
    """``refresh``: ask billing now whatever the cache's age. ``from``/``to``: the
    dashboard's period (inclusive; default the last 12 months)."""

    refresh: bool = False
    from_: dt.date | None = msgspec.field(name="from", default=None)
    to: dt.date | None = None


class AccountBilling(msgspec.Struct, kw_only=True):
    account_id: int
    or_number: str
    billing: BillingBlock
    equipment: list[Equipment]


class BillingRefresh(msgspec.Struct, kw_only=True):
    client_id: int
    accounts: list[AccountBilling]


def _period(query: CardQuery) -> tuple[dt.date, dt.date]:
    start, end = cards.default_period(query.to or cards.kyiv_today())
    start = query.from_ or start
    if start > end:
        raise InvalidInput("from", f"the period starts ({start}) after it ends ({end})")
    return start, end


async def _card(
    request: web.Request,
    query: CardQuery,
    *,
    client_id: int | None = None,
    or_number: str | None = None,
) -> cards.Card:
    user = principal(request)
    return await cards.build_card(
        request.app[DB],
        request.app[BILLING],
        client_id=client_id,
        or_number=or_number,
        pii="clients.pii" in user.permissions,
        refresh=query.refresh,
        period=_period(query),
        refreshed_by=user.login,
    )


@endpoints.get(
    r"/api/v1/clients/{client_id:\d+}",
    permission="clients.read",
    query=CardQuery,
    response=cards.Card,
    errors=(400, 404),
)
async def client_card(request: web.Request, query: CardQuery) -> cards.Card:
    """The client card: identity, accounts, contacts, billing, meters, dashboard."""
    return await _card(request, query, client_id=path_int(request, "client_id"))


@endpoints.get(
    "/api/v1/accounts/by-or/{or_number}",
    permission="clients.read",
    query=CardQuery,
    response=cards.Card,
    errors=(400, 404),
)
async def card_by_or(request: web.Request, query: CardQuery) -> cards.Card:
    """The card of the client holding a personal account, by its OR number (10 digits)."""
    or_number = request.match_info["or_number"]
    if not _OR_NUMBER.match(or_number):
        raise InvalidInput("or_number", f"an OR number is 10 digits, got {or_number!r}")
    return await _card(request, query, or_number=or_number)


@endpoints.post(
    r"/api/v1/clients/{client_id:\d+}/billing/refresh",
    permission="clients.read",
    response=BillingRefresh,
    errors=(400, 404, 503, 504),
)
async def refresh_billing(request: web.Request) -> BillingRefresh | web.Response:
    """Refresh the client's billing data now; 503/504 problems when billing fails."""
    client_id = path_int(request, "client_id")
    async with request.app[DB].acquire() as conn:
        accounts = await cards.client_accounts(conn, client_id)
    billing = request.app[BILLING]
    resolved = await billing.refresh_now(accounts, refreshed_by=principal(request).login)
    items = [
        AccountBilling(
            account_id=a.account_id,
            or_number=a.or_number,
            billing=resolved[a.account_id].block,
            equipment=resolved[a.account_id].equipment,
        )
        for a in accounts
    ]
    down = [i for i in items if i.billing.refresh == "unavailable"]
    slow = [i for i in items if i.billing.refresh in ("timeout", "pending")]
    if down or slow:
        failed = down or slow
        detail = "; ".join(f"{i.or_number}: {i.billing.error or 'no answer yet'}" for i in failed)
        return problem_response(
            request,
            503 if down else 504,
            code="billing-unavailable" if down else "billing-timeout",
            detail=f"billing could not refresh {len(failed)} of {len(items)} accounts ({detail}); "
            "the card shows the cached data marked stale",
        )
    return BillingRefresh(client_id=client_id, accounts=items)
