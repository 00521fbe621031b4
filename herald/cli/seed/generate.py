"""Deterministic generation of one chunk of clients as COPY text, one piece per table.

A chunk is a fixed run of client ids with its own RNG seeded from (seed, chunk index),
so its rows do not depend on which process makes it or when. The number of accounts,
contacts and meters in a chunk is an exact function of its client count (the shares
below are applied as exact counts, and only *which* clients get them is random), so
every chunk's id ranges are known before any chunk is generated.
"""

from __future__ import annotations

import random
from typing import Final, NamedTuple

import msgspec

from herald.cli.seed.codes import derive_seed
from herald.cli.seed.people import People, max_clients
from herald.cli.seed.premises import Account, Premises
from herald.cli.seed.sampling import AS_OF_DAY

# Clients per chunk. Part of the data's identity: another size gives other rows.
CHUNK_CLIENTS = 50_000

# Columns written by COPY, per table, in load order (parents before children). Identity
# ids are written explicitly; generated columns are computed by PostgreSQL.
COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "clients": (
        "id",
        "last_name",
        "first_name",
        "middle_name",
        "birth_date",
        "passport_number",
        "tax_id",
        "created_at",
        "updated_at",
        "search_keys",
    ),
    "accounts": (
        "id",
        "client_id",
        "or_number",
        "eic_code",
        "region_code",
        "district",
        "city",
        "street",
        "building",
        "flat",
        "postal_code",
        "consumer_type",
        "registers",
        "destroyed_housing",
        "tariff_code",
        "status",
        "opened_at",
        "closed_at",
        "created_at",
        "updated_at",
    ),
    "contacts": (
        "id",
        "client_id",
        "last_name",
        "first_name",
        "middle_name",
        "phone",
        "email",
        "is_active",
        "created_at",
        "updated_at",
    ),
    "account_contacts": (
        "account_id",
        "contact_id",
        "role",
        "is_active",
        "linked_at",
        "unlinked_at",
    ),
    "meters": (
        "id",
        "account_id",
        "serial_number",
        "model",
        "size_class",
        "installed_at",
        "verified_until",
        "status",
        "created_at",
    ),
    "billing_snapshots": (
        "account_id",
        "balance",
        "debt",
        "last_charge_amount",
        "last_charge_period",
        "last_payment_amount",
        "last_payment_at",
        "due_date",
        "fetched_at",
    ),
    "consents": ("client_id", "channel", "topic", "opted_in", "source", "changed_at"),
}
TABLES: Final = tuple(COLUMNS)

# Exact shares per chunk, in clients per thousand (accounts per thousand for meters).
_SECOND_ACCOUNT: Final = 45  # a dacha or an inherited home
_THIRD_ACCOUNT: Final = 8
_CO_OWNER: Final = 300  # a spouse or relative on the contract
_BILLING: Final = 140  # a son or daughter who pays the bills
_FORMER_OWNER: Final = 20  # the deceased or moved-out previous holder, unlinked
_OWNER_EXTRA: Final = 50  # the holder's second number or e-mail
_TWO_METERS: Final = 70
_FAMILY_PHONE: Final = 0.015  # owner's phone is the previous client's (a relative's) number

_CO, _BILL, _FORMER, _EXTRA = 1, 2, 4, 8


class Reference(msgspec.Struct, frozen=True):
    """Codes of the reference tables the generated rows point at, read from the database."""

    regions: tuple[str, ...]
    tariffs: tuple[tuple[str, float], ...]  # (code, price per m³)
    topics: tuple[str, ...]


class ChunkTask(msgspec.Struct, frozen=True):
    """Everything a worker needs to generate one chunk."""

    seed: int
    index: int
    clients: int
    first_client: int
    first_account: int
    first_contact: int
    first_meter: int
    reference: Reference


class ChunkData(msgspec.Struct, frozen=True):
    """One generated chunk: COPY text and row count per table."""

    index: int
    clients: int
    rows: dict[str, int]
    data: dict[str, bytes]


class ChunkSizes(NamedTuple):
    """Rows with identity ids in a chunk of a given number of clients."""

    accounts: int
    contacts: int
    meters: int


def _share(n: int, per_mille: int) -> int:
    return n * per_mille // 1000


def chunk_sizes(clients: int) -> ChunkSizes:
    """How many accounts, contacts and meters a chunk of ``clients`` clients holds."""
    accounts = clients + _share(clients, _SECOND_ACCOUNT) + 2 * _share(clients, _THIRD_ACCOUNT)
    contacts = clients + sum(
        _share(clients, p) for p in (_CO_OWNER, _BILLING, _FORMER_OWNER, _OWNER_EXTRA)
    )
    return ChunkSizes(accounts, contacts, accounts + _share(accounts, _TWO_METERS))


def plan_chunks(
    clients: int, seed: int, reference: Reference, chunk_clients: int = CHUNK_CLIENTS
) -> list[ChunkTask]:
    """The chunks of a seeding run, with the id ranges of each (ids start at 1)."""
    if clients > max_clients():
        raise ValueError(
            f"at most {max_clients():,} clients can get unique document and tax numbers"
        )
    tasks = []
    account = contact = meter = 1
    for index, start in enumerate(range(0, clients, chunk_clients)):
        n = min(chunk_clients, clients - start)
        tasks.append(ChunkTask(seed, index, n, start + 1, account, contact, meter, reference))
        sizes = chunk_sizes(n)
        account, contact, meter = (
            account + sizes.accounts,
            contact + sizes.contacts,
            meter + sizes.meters,
        )
    return tasks


def _email_share(year: int) -> float:
    return 0.25 if year < 1960 else 0.5 if year <= 1985 else 0.7


def generate_chunk(task: ChunkTask) -> ChunkData:
    """Generate the rows of one chunk (runs in a worker process)."""
    rng = random.Random(derive_seed(task.seed, "chunk", task.index))
    rand = rng.random
    n = task.clients
    sizes = chunk_sizes(n)
    out: dict[str, list[str]] = {table: [] for table in TABLES}
    ref = task.reference
    premises = Premises(
        task.seed,
        ref.regions,
        dict(ref.tariffs),
        rng,
        out["accounts"],
        out["meters"],
        out["billing_snapshots"],
    )
    people = People(
        task.seed,
        ref.topics,
        rng,
        out["clients"],
        out["contacts"],
        out["account_contacts"],
        out["consents"],
    )

    # Which clients get a second/third account, extra contacts; which accounts two meters.
    accounts_of = bytearray(b"\x01" * n)
    picked = rng.sample(range(n), _share(n, _SECOND_ACCOUNT) + _share(n, _THIRD_ACCOUNT))
    for k, i in enumerate(picked):
        accounts_of[i] = 2 if k < _share(n, _SECOND_ACCOUNT) else 3
    extras = bytearray(n)
    for flag, per_mille in (
        (_CO, _CO_OWNER),
        (_BILL, _BILLING),
        (_FORMER, _FORMER_OWNER),
        (_EXTRA, _OWNER_EXTRA),
    ):
        for i in rng.sample(range(n), _share(n, per_mille)):
            extras[i] |= flag
    meters_of = bytearray(b"\x01" * sizes.accounts)
    for j in rng.sample(range(sizes.accounts), _share(sizes.accounts, _TWO_METERS)):
        meters_of[j] = 2

    account_id, contact_id, meter_id = task.first_account, task.first_contact, task.first_meter
    previous_phone: str | None = None
    has_dacha_region = "UA-32" in ref.regions
    for i in range(n):
        client_id = task.first_client + i
        person, serial = people.client_person(client_id)
        home = premises.home_region()
        accounts: list[Account] = []
        for k in range(accounts_of[i]):
            region = home
            if k and rand() < 0.3:
                # Kyivans' dachas are in Kyiv Oblast; elsewhere sometimes another oblast.
                region = "UA-32" if home == "UA-30" and has_dacha_region else premises.home_region()
            account = premises.account(account_id, client_id, region, k > 0, person.year)
            count = meters_of[account_id - task.first_account]
            premises.meters(account, meter_id, count)
            premises.billing(account)
            accounts.append(account)
            account_id += 1
            meter_id += count
        created = min(a.created_day for a in accounts)
        people.client(client_id, person, serial, created, [a.address for a in accounts])

        # The holder: one contact shared by all of the client's accounts.
        flags = extras[i]
        owner_id = contact_id
        contact_id += 1
        shared = previous_phone if previous_phone and rand() < _FAMILY_PHONE else None
        phone, has_email = people.contact(
            owner_id,
            client_id,
            person,
            created,
            phone=0.94,
            email=_email_share(person.year),
            phone_override=shared,
        )
        previous_phone = phone or previous_phone
        first_owner_day = accounts[0].created_day
        if flags & _FORMER:
            # The previous holder (inherited home): inactive contact, owner link ended
            # the day the present holder's began.
            first_owner_day = min(AS_OF_DAY, first_owner_day + 30 + int(rand() * 700))
            parent = people.relative(person, male=rand() < 0.4, years_younger=-28)
            people.contact(
                contact_id,
                client_id,
                parent,
                accounts[0].created_day,
                phone=0.8,
                email=0.05,
                active=False,
            )
            people.link(
                accounts[0].id,
                contact_id,
                "owner",
                accounts[0].created_day,
                unlinked_day=first_owner_day,
            )
            contact_id += 1
        for k, account in enumerate(accounts):
            people.link(
                account.id, owner_id, "owner", first_owner_day if k == 0 else account.created_day
            )
        if flags & _CO:
            spouse = people.relative(
                person, male=not person.male, years_younger=0, same_surname=rand() < 0.9
            )
            people.contact(
                contact_id,
                client_id,
                spouse,
                created + int(rand() * 400),
                phone=0.9,
                email=_email_share(spouse.year) * 0.8,
            )
            for k, account in enumerate(accounts):
                if k == 0 or rand() < 0.4:
                    day = account.created_day + int(rand() * 200)
                    people.link(
                        account.id,
                        contact_id,
                        "co_owner",
                        day,
                        unlinked_day=day + int(rand() * 900) if rand() < 0.03 else None,
                    )
            contact_id += 1
        if flags & _BILL:
            child = people.relative(
                person, male=rand() < 0.5, years_younger=28, same_surname=rand() < 0.8
            )
            people.contact(
                contact_id,
                client_id,
                None if rand() < 0.05 else child,
                created + int(rand() * 600),
                phone=0.85,
                email=_email_share(child.year),
                middle=rand() < 0.6,
            )
            every = rand() < 0.3
            target = int(rand() * len(accounts))
            for k, account in enumerate(accounts):
                if every or k == target:
                    people.link(
                        account.id,
                        contact_id,
                        "billing_contact",
                        account.created_day + int(rand() * 300),
                    )
            contact_id += 1
        if flags & _EXTRA:
            people.contact(
                contact_id, client_id, person, created + int(rand() * 900), phone=0.6, email=0.5
            )
            for account in accounts:
                people.link(
                    account.id,
                    contact_id,
                    "billing_contact",
                    account.created_day + int(rand() * 900),
                )
            contact_id += 1
        people.consents(client_id, has_email, created)

    rows = {table: len(lines) for table, lines in out.items()}
    return ChunkData(
        task.index, n, rows, {table: "".join(lines).encode() for table, lines in out.items()}
    )
