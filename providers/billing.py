"""The billing service's API as Herald speaks it: its wire format, errors and HTTP connector.

Billing is the customer's system of record for money. ``HttpBillingConnector`` speaks its
HTTP API (``GET {billing_url}/v1/accounts/{or_number}``, bearer token), which
``providers/sim/billing.py`` simulates; ``crm.billing`` keeps Herald's cache of the answers.
Provider layer: imports the kernel only.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Protocol
from urllib.parse import quote

import aiohttp
import msgspec

from herald.errors import HeraldError

CENTS = Decimal("0.01")
LITRES = Decimal("0.001")
REQUEST_TIMEOUT_SECONDS = 5.0
"""The longest one billing request may take; a background refresh gives up after it."""


# -- What billing answers (the wire format of the billing API) ---------------------------


class Charge(msgspec.Struct, frozen=True):
    """A monthly charge: ``period`` is the first day of the month billed."""

    id: str
    period: dt.date
    volume_m3: Decimal
    amount: Decimal
    posted_at: dt.datetime


class Payment(msgspec.Struct, frozen=True):
    id: str
    paid_at: dt.datetime
    amount: Decimal
    method: str


class Equipment(msgspec.Struct, frozen=True):
    """Gas equipment at the supply point, as billing records it (stove, boiler, water heater)."""

    kind: str
    model: str
    installed_on: dt.date | None = None


class BillingMeter(msgspec.Struct, frozen=True):
    serial_number: str
    model: str
    size_class: str | None = None
    installed_on: dt.date | None = None


class GdoReading(msgspec.Struct, frozen=True):
    """A meter reading taken by the gas distribution operator, passed on by billing."""

    meter_serial: str
    value: Decimal
    read_on: dt.date


class BillingData(msgspec.Struct, frozen=True, kw_only=True):
    """Billing's answer for one account. New fields always get defaults (mixed versions)."""

    or_number: str
    balance: Decimal  # > 0 prepaid, < 0 owed
    debt: Decimal  # overdue part of what is owed, >= 0
    tariff_code: str
    due_date: dt.date | None = None
    charges: list[Charge] = []
    payments: list[Payment] = []
    equipment: list[Equipment] = []
    meters: list[BillingMeter] = []
    gdo_readings: list[GdoReading] = []


# -- Errors --------------------------------------------------------------------------------


class BillingError(HeraldError):
    """Billing could not give an account's data."""

    code = "billing-error"


class BillingUnavailable(BillingError):
    """Billing is down, refused the request or answered something unusable."""

    code = "billing-unavailable"


class BillingTimeout(BillingUnavailable):
    """Billing did not answer within the request timeout."""

    code = "billing-timeout"


class BillingAccountUnknown(BillingError):
    """Billing has no such account (Herald and billing disagree)."""

    code = "billing-account-unknown"


# -- The connector -------------------------------------------------------------------------


class BillingConnector(Protocol):
    """Anything that fetches one account's billing data by its OR number."""

    async def fetch(self, or_number: str) -> BillingData:
        """The account's data; raise a BillingError subclass when billing cannot give it."""
        ...


class HttpBillingConnector:
    """The billing service's HTTP API; the session is owned by the caller."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        token: str,
        *,
        request_timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._decoder = msgspec.json.Decoder(BillingData)

    async def fetch(self, or_number: str) -> BillingData:
        url = f"{self._base}/v1/accounts/{quote(or_number, safe='')}"
        try:
            async with self._session.get(url, headers=self._headers, timeout=self._timeout) as r:
                status, body = r.status, await r.read()
        except TimeoutError:
            raise BillingTimeout(
                f"billing did not answer for {or_number} within {self._timeout.total:g} s"
            ) from None
        except aiohttp.ClientError as exc:
            raise BillingUnavailable(f"billing is unreachable: {exc}") from None
        if status == 404:
            raise BillingAccountUnknown(f"billing has no account {or_number}")
        if status != 200:
            raise BillingUnavailable(f"billing answered HTTP {status} for {or_number}")
        try:
            data = self._decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise BillingUnavailable(
                f"billing sent a malformed answer for {or_number}: {exc}"
            ) from None
        if data.or_number != or_number:
            raise BillingUnavailable(
                f"billing answered about {data.or_number} when asked for {or_number}"
            )
        if data.debt < 0:
            raise BillingUnavailable(f"billing sent a negative debt for {or_number}")
        return normalise(data)


def normalise(data: BillingData) -> BillingData:
    """Money to cents, volumes and readings to litres, lists newest first."""
    charges = sorted(
        (
            msgspec.structs.replace(
                c, volume_m3=c.volume_m3.quantize(LITRES), amount=c.amount.quantize(CENTS)
            )
            for c in data.charges
        ),
        key=lambda c: (c.period, c.posted_at),
        reverse=True,
    )
    payments = sorted(
        (msgspec.structs.replace(p, amount=p.amount.quantize(CENTS)) for p in data.payments),
        key=lambda p: p.paid_at,
        reverse=True,
    )
    readings = [
        msgspec.structs.replace(g, value=g.value.quantize(LITRES)) for g in data.gdo_readings
    ]
    return msgspec.structs.replace(
        data,
        balance=data.balance.quantize(CENTS),
        debt=data.debt.quantize(CENTS),
        charges=charges,
        payments=payments,
        gdo_readings=readings,
    )
