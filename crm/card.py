"""The Client 360 card: identity, accounts, contacts, billing, meters, channels, dashboard.

``build_card`` assembles it from indexed queries on one connection, one round trip per
block: the client with its accounts, regions, tariffs and cached billing; the contacts
with their links; the meters and their latest readings (crm.meters); digital channels,
shop orders and customer experience (crm.activity). Billing refreshes the accounts
need start right after the first query, so they run while the others do; the
connection is given back before the card waits (at most the billing timeout) for them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal

import asyncpg
import msgspec

from crm import activity, meters, pii
from crm.activity import ChannelUsage, CustomerExperience, ShopOrders
from crm.billing import (
    SNAPSHOT_COLUMNS,
    AccountRef,
    BillingBlock,
    BillingCache,
    ResolvedBilling,
    state_from_row,
)
from crm.meters import Meter, Reading
from herald import clock
from herald.errors import NotFound
from providers.billing import Equipment

# -- The card ------------------------------------------------------------------------------


class Identity(msgspec.Struct, kw_only=True):
    """Who the client is. Passport number and tax id are masked without ``clients.pii``."""

    client_id: int
    full_name: str
    last_name: str
    first_name: str
    middle_name: str | None
    birth_date: dt.date | None
    passport_number: str | None
    tax_id: str | None
    pii_masked: bool
    created_at: dt.datetime
    updated_at: dt.datetime


class Address(msgspec.Struct, kw_only=True):
    """The gas-supply address; ``text`` is the whole of it on one line."""

    text: str
    postal_code: str | None
    region_code: str
    region_name: str
    district: str | None
    city: str
    street: str
    building: str
    flat: str | None


class Tariff(msgspec.Struct, kw_only=True):
    code: str
    name_uk: str
    price_per_m3: Decimal


class AccountContact(msgspec.Struct, kw_only=True):
    """A contact's role on this account; an inactive link is kept, not deleted."""

    contact_id: int
    role: str
    is_active: bool
    linked_at: dt.datetime
    unlinked_at: dt.datetime | None


class AccountCard(msgspec.Struct, kw_only=True):
    """A personal account with its contacts, meters, billing block and billing's equipment."""

    id: int
    or_number: str
    eic_code: str
    address: Address
    consumer_type: str
    registers: list[str]
    destroyed_housing: bool
    tariff: Tariff
    status: str
    opened_at: dt.date
    closed_at: dt.date | None
    equipment: list[Equipment]
    contacts: list[AccountContact]
    meters: list[Meter]
    billing: BillingBlock


class ContactLink(msgspec.Struct, kw_only=True):
    account_id: int
    or_number: str
    role: str
    is_active: bool


class ContactCard(msgspec.Struct, kw_only=True):
    """A contact of the client (``owned``) or linked to one of its accounts."""

    id: int
    last_name: str | None
    first_name: str | None
    middle_name: str | None
    phone: str | None
    email: str | None
    is_active: bool
    owned: bool
    links: list[ContactLink]


class ActiveCase(msgspec.Struct, kw_only=True):
    """One of the client's open cases, as listed on the dashboard."""

    case_id: int
    number: str
    status: str
    channel: str
    created_at: dt.datetime
    category: str | None
    category_name: str | None


class ActiveCases(msgspec.Struct, kw_only=True):
    """The client's cases not resolved or closed: how many, and the newest of them."""

    count: int = 0
    newest: list[ActiveCase] = msgspec.field(default_factory=list)


class Dashboard(msgspec.Struct, kw_only=True):
    """Aggregates over the client's accounts (CM-08).

    Payments are counted from billing data as known now: ``billing_complete`` is false
    when some account's billing is unavailable, and billing's history starts at
    ``billing_history_from`` (payments before it are not known to Herald).
    ``active_cases``: the client's cases still to be worked (not resolved or closed).
    """

    period_from: dt.date
    period_to: dt.date
    payments_count: int
    payments_sum: Decimal
    debt_total: Decimal
    balance_total: Decimal
    billing_complete: bool
    billing_history_from: dt.date | None
    active_cases: ActiveCases = msgspec.field(default_factory=ActiveCases)


class Card(msgspec.Struct, kw_only=True):
    """The client card. ``requested_account_id``: the account asked for by OR number, if any.

    ``channels``: personal cabinet, mobile app, online shop, chatbot (used or not, last
    interaction); ``shop_orders``: current and past; ``customer_experience``: surveys,
    outbound call results, opt-outs; ``dashboard.active_cases``: the open cases.
    """

    client: Identity
    requested_account_id: int | None
    accounts: list[AccountCard]
    contacts: list[ContactCard]
    channels: list[ChannelUsage]
    shop_orders: ShopOrders
    customer_experience: CustomerExperience
    dashboard: Dashboard


# -- Queries -------------------------------------------------------------------------------

_CARD_ROWS = f"""
SELECT c.id AS client_id, c.last_name, c.first_name, c.middle_name, c.birth_date,
       c.passport_number, c.tax_id, c.created_at, c.updated_at,
       a.id AS account_id, a.or_number, a.eic_code, a.region_code, r.name_uk AS region_name,
       a.district, a.city, a.street, a.building, a.flat, a.postal_code, a.consumer_type,
       a.registers, a.destroyed_housing, a.tariff_code, t.name_uk AS tariff_name,
       t.price_per_m3, a.status, a.opened_at, a.closed_at,
       {SNAPSHOT_COLUMNS}
FROM clients c
LEFT JOIN accounts a ON a.client_id = c.id
LEFT JOIN regions r ON r.code = a.region_code
LEFT JOIN tariffs t ON t.code = a.tariff_code
LEFT JOIN billing_snapshots b ON b.account_id = a.id
WHERE c.id = {{client}}
ORDER BY a.status = 'active' DESC, a.id
"""
_BY_ID = _CARD_ROWS.format(client="$1")
_BY_OR = _CARD_ROWS.format(client="(SELECT client_id FROM accounts WHERE or_number = $1)")

# Contacts the client owns, and contacts of others linked to its accounts (one contact
# may serve several consumers); links shown are those to this client's accounts.
_CONTACTS = """
WITH links AS (
    SELECT contact_id, account_id, role, is_active, linked_at, unlinked_at
    FROM account_contacts WHERE account_id = ANY($2::bigint[])),
shown AS (
    -- A UNION, not an OR: each side is an index probe (an OR with a subquery would scan).
    SELECT id FROM contacts WHERE client_id = $1
    UNION
    SELECT contact_id FROM links)
SELECT ct.id, ct.client_id, ct.last_name, ct.first_name, ct.middle_name, ct.phone, ct.email,
       ct.is_active, l.account_id, l.role, l.is_active AS link_active, l.linked_at, l.unlinked_at
FROM shown
JOIN contacts ct ON ct.id = shown.id
LEFT JOIN links l ON l.contact_id = ct.id
ORDER BY ct.is_active DESC, ct.id, l.account_id
"""

_METERS = """
SELECT id, account_id, serial_number, model, size_class, installed_at, verified_until, status,
       created_at
FROM meters WHERE account_id = ANY($1::bigint[])
ORDER BY account_id, status = 'active' DESC, id
"""


# The client's open cases through cases_client_idx (client_id, created_at DESC): the count
# comes from the same index range as the newest few, so one query answers both.
ACTIVE_CASES_SHOWN = 5
_ACTIVE_CASES = """
SELECT c.id, c.number, c.status, c.channel, c.created_at, cat.code AS category,
       cat.name_uk AS category_name, count(*) OVER () AS total
FROM cases c
LEFT JOIN case_categories cat ON cat.id = c.category_id
WHERE c.client_id = $1 AND c.status NOT IN ('resolved', 'closed')
ORDER BY c.created_at DESC, c.id DESC
LIMIT $2
"""


mask = pii.mask


def default_period(today: dt.date) -> tuple[dt.date, dt.date]:
    """The last 12 months up to ``today``."""
    try:
        start = today.replace(year=today.year - 1)
    except ValueError:  # 29 February
        start = today.replace(year=today.year - 1, day=28)
    return start + dt.timedelta(days=1), today


def kyiv_today() -> dt.date:
    return clock.today(clock.business_tz())


async def build_card(
    pool: asyncpg.Pool,
    billing: BillingCache,
    *,
    client_id: int | None = None,
    or_number: str | None = None,
    pii: bool,
    refresh: bool,
    period: tuple[dt.date, dt.date],
    refreshed_by: str,
) -> Card:
    """The card of a client, by Client_ID or by one of its OR numbers; NotFound if none."""
    async with pool.acquire() as conn:
        if client_id is not None:
            rows = await conn.fetch(_BY_ID, client_id)
        else:
            rows = await conn.fetch(_BY_OR, or_number)
        if not rows:
            raise NotFound(
                f"no client {client_id}"
                if client_id is not None
                else f"no account with OR number {or_number}"
            )
        accounts = [r for r in rows if r["account_id"] is not None]
        read = billing.begin(
            [AccountRef(r["account_id"], r["or_number"], state_from_row(r)) for r in accounts],
            force=refresh,
            refreshed_by=refreshed_by,
        )
        account_ids = [r["account_id"] for r in accounts]
        found_id = rows[0]["client_id"]
        contact_rows = await conn.fetch(_CONTACTS, found_id, account_ids)
        meter_rows = await conn.fetch(_METERS, account_ids) if account_ids else []
        latest = await meters.latest_readings(conn, [m["id"] for m in meter_rows])
        channels = await activity.channel_usage(conn, found_id)
        shop = await activity.shop_orders(conn, found_id)
        experience = await activity.customer_experience(conn, found_id)
        open_cases = await active_cases(conn, found_id)
    resolved = await read.wait()
    first = rows[0]
    requested = next((r["account_id"] for r in accounts if r["or_number"] == or_number), None)
    return Card(
        client=_identity(first, pii),
        requested_account_id=requested,
        accounts=[
            _account(r, resolved[r["account_id"]], contact_rows, meter_rows, latest)
            for r in accounts
        ],
        contacts=_contacts(
            found_id, contact_rows, {r["account_id"]: r["or_number"] for r in accounts}
        ),
        channels=channels,
        shop_orders=shop,
        customer_experience=experience,
        dashboard=_dashboard(period, [resolved[r["account_id"]] for r in accounts], open_cases),
    )


async def active_cases(
    conn: asyncpg.Connection, client_id: int, shown: int = ACTIVE_CASES_SHOWN
) -> ActiveCases:
    """How many of the client's cases are open, and the ``shown`` newest of them."""
    rows = await conn.fetch(_ACTIVE_CASES, client_id, shown)
    return ActiveCases(
        count=rows[0]["total"] if rows else 0,
        newest=[
            ActiveCase(
                case_id=r["id"],
                number=r["number"],
                status=r["status"],
                channel=r["channel"],
                created_at=r["created_at"],
                category=r["category"],
                category_name=r["category_name"],
            )
            for r in rows
        ],
    )


async def client_accounts(conn: asyncpg.Connection, client_id: int) -> list[AccountRef]:
    """The client's accounts with their cached billing; NotFound for an unknown client."""
    rows = await conn.fetch(_BY_ID, client_id)
    if not rows:
        raise NotFound(f"no client {client_id}")
    return [
        AccountRef(r["account_id"], r["or_number"], state_from_row(r))
        for r in rows
        if r["account_id"] is not None
    ]


def _identity(row: asyncpg.Record, pii: bool) -> Identity:
    names = (row["last_name"], row["first_name"], row["middle_name"])
    return Identity(
        client_id=row["client_id"],
        full_name=" ".join(n for n in names if n),
        last_name=row["last_name"],
        first_name=row["first_name"],
        middle_name=row["middle_name"],
        birth_date=row["birth_date"],
        passport_number=row["passport_number"] if pii else mask(row["passport_number"]),
        tax_id=row["tax_id"] if pii else mask(row["tax_id"]),
        pii_masked=not pii,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _address(row: asyncpg.Record) -> Address:
    parts = [
        row["postal_code"],
        row["region_name"],
        row["district"],
        row["city"],
        row["street"],
        row["building"],
        f"кв. {row['flat']}" if row["flat"] else None,
    ]
    return Address(
        text=", ".join(p for p in parts if p),
        postal_code=row["postal_code"],
        region_code=row["region_code"],
        region_name=row["region_name"],
        district=row["district"],
        city=row["city"],
        street=row["street"],
        building=row["building"],
        flat=row["flat"],
    )


def _account(
    row: asyncpg.Record,
    billing: ResolvedBilling,
    contact_rows: Sequence[asyncpg.Record],
    meter_rows: Sequence[asyncpg.Record],
    latest: dict[int, Reading],
) -> AccountCard:
    account_id = row["account_id"]
    return AccountCard(
        id=account_id,
        or_number=row["or_number"],
        eic_code=row["eic_code"],
        address=_address(row),
        consumer_type=row["consumer_type"],
        registers=list(row["registers"]),
        destroyed_housing=row["destroyed_housing"],
        tariff=Tariff(
            code=row["tariff_code"], name_uk=row["tariff_name"], price_per_m3=row["price_per_m3"]
        ),
        status=row["status"],
        opened_at=row["opened_at"],
        closed_at=row["closed_at"],
        equipment=billing.equipment,
        contacts=[
            AccountContact(
                contact_id=c["id"],
                role=c["role"],
                is_active=c["link_active"],
                linked_at=c["linked_at"],
                unlinked_at=c["unlinked_at"],
            )
            for c in contact_rows
            if c["account_id"] == account_id
        ],
        meters=[
            Meter(
                m["id"],
                m["account_id"],
                m["serial_number"],
                m["model"],
                m["size_class"],
                m["installed_at"],
                m["verified_until"],
                m["status"],
                m["created_at"],
                latest.get(m["id"]),
            )
            for m in meter_rows
            if m["account_id"] == account_id
        ],
        billing=billing.block,
    )


def _contacts(
    client_id: int, rows: Sequence[asyncpg.Record], or_numbers: dict[int, str]
) -> list[ContactCard]:
    cards: dict[int, ContactCard] = {}
    for r in rows:
        card = cards.get(r["id"])
        if card is None:
            card = cards[r["id"]] = ContactCard(
                id=r["id"],
                last_name=r["last_name"],
                first_name=r["first_name"],
                middle_name=r["middle_name"],
                phone=r["phone"],
                email=r["email"],
                is_active=r["is_active"],
                owned=r["client_id"] == client_id,
                links=[],
            )
        if r["account_id"] is not None:
            card.links.append(
                ContactLink(
                    account_id=r["account_id"],
                    or_number=or_numbers[r["account_id"]],
                    role=r["role"],
                    is_active=r["link_active"],
                )
            )
    return list(cards.values())


def _dashboard(
    period: tuple[dt.date, dt.date], billing: Sequence[ResolvedBilling], open_cases: ActiveCases
) -> Dashboard:
    start, end = period
    count, total = 0, Decimal("0.00")
    debt, balance = Decimal("0.00"), Decimal("0.00")
    history: list[dt.date] = []
    for item in billing:
        block = item.block
        if not block.available:
            continue
        debt += block.debt or 0
        balance += block.balance or 0
        if block.charges:
            history.append(min(c.period for c in block.charges))
        for payment in block.payments:
            if start <= payment.paid_at.astimezone(clock.business_tz()).date() <= end:
                count += 1
                total += payment.amount
    return Dashboard(
        period_from=start,
        period_to=end,
        payments_count=count,
        payments_sum=total,
        debt_total=debt,
        balance_total=balance,
        billing_complete=all(i.block.available for i in billing),
        billing_history_from=min(history, default=None),
        active_cases=open_cases,
    )
