"""Everything the pipeline needs about a batch of recipients, in one query."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import msgspec


class Recipient(msgspec.Struct, frozen=True):
    """A client as a message sees it: contacts, region and the template variables."""

    client_id: int
    phone: str | None
    email: str | None
    region_code: str | None
    time_zone: str
    variables: dict[str, object]
    # The client's language for templates with translations ('uk' unless the client chose).
    language: str = "uk"


# The primary account is the client's oldest active one; phone and e-mail come from
# the active contacts of that account, the owner first.
_SQL = """
SELECT c.id AS client_id, coalesce(c.language, 'uk') AS language, c.first_name, c.middle_name, c.last_name,
       a.or_number, a.eic_code, a.region_code, coalesce(r.time_zone, herald_business_tz()) AS time_zone,
       r.name_uk AS region, r.name_en AS region_en, concat_ws(', ', a.city, a.street, a.building,
                                      CASE WHEN a.flat IS NOT NULL THEN 'кв. ' || a.flat END) AS address,
       a.city, t.name_uk AS tariff, t.name_en AS tariff_en, t.price_per_m3 AS tariff_price, b.balance, b.debt,
       b.due_date, b.last_charge_amount, b.last_payment_amount,
       b.last_payment_at AS last_payment_date, m.serial_number AS meter_number, ph.phone, em.email
FROM unnest($1::bigint[]) AS ids(id)
JOIN clients c ON c.id = ids.id
LEFT JOIN LATERAL (
    SELECT * FROM accounts a WHERE a.client_id = c.id
    ORDER BY a.status = 'active' DESC, a.id LIMIT 1) a ON true
LEFT JOIN regions r ON r.code = a.region_code
LEFT JOIN tariffs t ON t.code = a.tariff_code
LEFT JOIN billing_snapshots b ON b.account_id = a.id
LEFT JOIN LATERAL (
    SELECT serial_number FROM meters WHERE account_id = a.id AND status = 'active'
    ORDER BY id LIMIT 1) m ON true
LEFT JOIN LATERAL (
    SELECT ct.phone FROM account_contacts ac JOIN contacts ct ON ct.id = ac.contact_id
    WHERE ac.account_id = a.id AND ac.is_active AND ct.is_active AND ct.phone IS NOT NULL
    ORDER BY ac.role = 'owner' DESC, ct.id LIMIT 1) ph ON true
LEFT JOIN LATERAL (
    SELECT ct.email FROM account_contacts ac JOIN contacts ct ON ct.id = ac.contact_id
    WHERE ac.account_id = a.id AND ac.is_active AND ct.is_active AND ct.email IS NOT NULL
    ORDER BY ac.role = 'owner' DESC, ct.id LIMIT 1) em ON true
"""

_TEXT = (
    "first_name",
    "middle_name",
    "last_name",
    "or_number",
    "eic_code",
    "region",
    "address",
    "city",
    "tariff",
    "meter_number",
    "region_en",
    "tariff_en",
)
_VALUES = (
    "balance",
    "debt",
    "due_date",
    "last_charge_amount",
    "last_payment_amount",
    "last_payment_date",
    "tariff_price",
)


class Organisation(msgspec.Struct, frozen=True):
    """Variables that are the same for every recipient (from settings)."""

    service_centre: str
    contact_phone: str
    cabinet_url: str
    app_url: str
    payment_url: str  # the OR number is appended: <payment_url>/<or_number>


async def load_recipients(
    conn: asyncpg.Connection, client_ids: Sequence[int], organisation: Organisation
) -> list[Recipient]:
    """Recipients of the given clients (unknown ids are left out), in no particular order."""
    rows = await conn.fetch(_SQL, list(client_ids))
    constants = msgspec.structs.asdict(organisation)
    found = []
    for row in rows:
        # Missing text is "" (templates print it as nothing); money stays Decimal and dates
        # stay dates, or None when unknown, so a template needing them fails that message.
        variables: dict[str, object] = {name: row[name] or "" for name in _TEXT}
        variables.update((name, row[name]) for name in _VALUES)
        variables.update(constants)
        variables["payment_url"] = f"{organisation.payment_url.rstrip('/')}/{row['or_number']}"
        variables["full_name"] = " ".join(
            p for p in (row["last_name"], row["first_name"], row["middle_name"]) if p
        )
        found.append(
            Recipient(
                client_id=row["client_id"],
                phone=row["phone"],
                email=row["email"],
                region_code=row["region_code"],
                time_zone=row["time_zone"],
                variables=variables,
                language=row["language"],
            )
        )
    return found
