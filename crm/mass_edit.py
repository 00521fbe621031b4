"""Mass edit of accounts (CM-03): one attribute change applied to a selection in set-based SQL.

A selection is a list of account ids, a list of client ids (all their accounts) or a
filter. It is refused above ``MAX_SELECTION`` accounts so that nobody locks a large part
of the 13 M-row table by accident. The selected rows are locked in id order, updated by
one statement that returns the old and new values of the rows it changed, and every
changed field of every changed row is journalled (entity ``account``) in the same
transaction. A dry run computes the same report with a plain SELECT and changes nothing.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import asyncpg
import msgspec

from herald import audit
from herald.audit import Actor, Change
from herald.errors import Conflict, InvalidInput

MAX_SELECTION = 100_000
DETAIL_CAP = 1_000
# A mass edit may scan the accounts table for a filter without an index; give it longer
# than the pool's default, and never queue behind another writer's locks for long.
STATEMENT_TIMEOUT = "120s"
LOCK_TIMEOUT = "10s"

ConsumerType = Literal["household", "household_heating", "condominium", "religious", "budget"]
Status = Literal["active", "suspended", "closed"]
Register = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{1,40}$")]
Registers = Annotated[list[Register], msgspec.Meta(min_length=1, max_length=20)]
Code = Annotated[str, msgspec.Meta(min_length=1, max_length=41)]
EDITED = ("consumer_type", "registers", "destroyed_housing", "tariff_code", "status", "closed_at")


class AccountFilter(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Accounts matching every criterion given; a list means any of its values."""

    region: (
        Annotated[
            list[Annotated[str, msgspec.Meta(pattern=r"^UA-[0-9]{2}$")]],
            msgspec.Meta(min_length=1, max_length=30),
        ]
        | None
    ) = None
    consumer_type: Annotated[list[ConsumerType], msgspec.Meta(min_length=1)] | None = None
    registers_contains: Registers | None = None
    destroyed_housing: bool | None = None
    tariff: Annotated[list[Code], msgspec.Meta(min_length=1, max_length=50)] | None = None
    status: Annotated[list[Status], msgspec.Meta(min_length=1)] | None = None
    city: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None


class AccountChanges(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The attributes to set; at least one. A status away from closed clears closed_at."""

    consumer_type: ConsumerType | None = None
    registers_add: Registers | None = None
    registers_remove: Registers | None = None
    destroyed_housing: bool | None = None
    tariff_code: Code | None = None
    status: Status | None = None


class FieldChange(msgspec.Struct, frozen=True):
    field: str
    old: Any
    new: Any


class RecordChange(msgspec.Struct, frozen=True):
    account_id: int
    client_id: int
    changes: list[FieldChange]


class MassEditReport(msgspec.Struct, frozen=True):
    dry_run: bool
    matched: int
    changed: int
    unchanged: int
    # Per-record detail of the first DETAIL_CAP changed accounts in id order.
    records: list[RecordChange]
    records_capped: bool
    # Ids given in account_ids / client_ids that select nothing (first DETAIL_CAP).
    not_found: list[int]


def _filter_sql(f: AccountFilter) -> tuple[str, list[Any]]:
    """WHERE clause and parameters; column names are fixed here, values are parameters."""
    clauses: list[str] = []
    params: list[Any] = []

    def add(template: str, value: Any) -> None:
        params.append(value)
        clauses.append(template.format(f"${len(params)}"))

    if f.region is not None:
        add("region_code = ANY({}::text[])", f.region)
    if f.consumer_type is not None:
        add("consumer_type = ANY({}::text[])", f.consumer_type)
    if f.registers_contains is not None:
        add("registers @> {}::text[]", f.registers_contains)
    if f.destroyed_housing is not None:
        add("destroyed_housing = {}::boolean", f.destroyed_housing)
    if f.tariff is not None:
        add("tariff_code = ANY({}::text[])", f.tariff)
    if f.status is not None:
        add("status = ANY({}::text[])", f.status)
    if f.city is not None:
        add("herald_search_norm(city) = herald_search_norm({}::text)", f.city)
    if not clauses:
        raise InvalidInput("filter", "give at least one criterion")
    return " AND ".join(clauses), params


async def _select(
    conn: asyncpg.Connection,
    *,
    account_ids: list[int] | None,
    client_ids: list[int] | None,
    account_filter: AccountFilter | None,
) -> tuple[list[int], list[int]]:
    """(selected account ids in id order, given ids that selected nothing)."""
    given = [x is not None for x in (account_ids, client_ids, account_filter)]
    if sum(given) != 1:
        raise InvalidInput(
            "account_ids", "select by exactly one of account_ids, client_ids, filter"
        )
    limit = MAX_SELECTION + 1
    if account_ids is not None:
        rows = await conn.fetch("SELECT id FROM accounts WHERE id = ANY($1::bigint[])", account_ids)
        ids = sorted(r["id"] for r in rows)
        found = set(ids)
        return ids, [i for i in dict.fromkeys(account_ids) if i not in found][:DETAIL_CAP]
    if client_ids is not None:
        rows = await conn.fetch(
            "SELECT id, client_id FROM accounts WHERE client_id = ANY($1::bigint[]) LIMIT $2",
            client_ids,
            limit,
        )
        if len(rows) > MAX_SELECTION:
            raise InvalidInput(
                "client_ids",
                f"these clients hold more than {MAX_SELECTION:,} accounts; split the request",
            )
        owners = {r["client_id"] for r in rows}
        return (
            sorted(r["id"] for r in rows),
            [i for i in dict.fromkeys(client_ids) if i not in owners][:DETAIL_CAP],
        )
    assert account_filter is not None
    where, params = _filter_sql(account_filter)
    rows = await conn.fetch(
        f"SELECT id FROM accounts WHERE {where} LIMIT ${len(params) + 1}", *params, limit
    )
    if len(rows) > MAX_SELECTION:
        raise InvalidInput(
            "filter", f"the filter selects more than {MAX_SELECTION:,} accounts; narrow it"
        )
    return sorted(r["id"] for r in rows), []


# $1 ids; $2 consumer_type; $3 registers to add; $4 to remove; $5 destroyed_housing;
# $6 tariff_code; $7 status. NULL leaves the attribute as it is.
_COMPUTE = """
WITH cur AS (
    SELECT id, client_id, consumer_type, registers, destroyed_housing, tariff_code, status, closed_at
    FROM accounts WHERE id = ANY($1::bigint[]) ORDER BY id {lock}
), calc AS (
    SELECT cur.*,
           coalesce($2::text, consumer_type) AS new_consumer_type,
           ARRAY(SELECT r FROM unnest(registers) WITH ORDINALITY u(r, i)
                 WHERE r <> ALL(coalesce($4::text[], '{{}}')) ORDER BY i)
           || ARRAY(SELECT a FROM unnest(coalesce($3::text[], '{{}}')) WITH ORDINALITY v(a, j)
                    WHERE a <> ALL(registers) ORDER BY j) AS new_registers,
           coalesce($5::boolean, destroyed_housing) AS new_destroyed_housing,
           coalesce($6::text, tariff_code) AS new_tariff_code,
           coalesce($7::text, status) AS new_status
    FROM cur
), diff AS (
    SELECT calc.*,
           CASE WHEN new_status = status THEN closed_at
                WHEN new_status = 'closed' THEN herald_now()::date END AS new_closed_at
    FROM calc
    WHERE (new_consumer_type, new_registers, new_destroyed_housing, new_tariff_code, new_status)
          IS DISTINCT FROM (consumer_type, registers, destroyed_housing, tariff_code, status)
)
"""
_PREVIEW = _COMPUTE.format(lock="") + "SELECT * FROM diff ORDER BY id"
_APPLY = (
    _COMPUTE.format(lock="FOR UPDATE")
    + """
, upd AS (
    UPDATE accounts a
    SET consumer_type = d.new_consumer_type, registers = d.new_registers,
        destroyed_housing = d.new_destroyed_housing, tariff_code = d.new_tariff_code,
        status = d.new_status, closed_at = d.new_closed_at, updated_at = herald_now()
    FROM diff d WHERE a.id = d.id
    RETURNING d.*
)
SELECT * FROM upd ORDER BY id
"""
)


def _record(row: asyncpg.Record) -> RecordChange:
    return RecordChange(
        row["id"],
        row["client_id"],
        [FieldChange(f, row[f], row[f"new_{f}"]) for f in EDITED if row[f] != row[f"new_{f}"]],
    )


async def mass_edit(
    conn: asyncpg.Connection,
    actor: Actor,
    *,
    changes: AccountChanges,
    account_ids: list[int] | None = None,
    client_ids: list[int] | None = None,
    account_filter: AccountFilter | None = None,
    dry_run: bool = False,
) -> MassEditReport:
    """Apply ``changes`` to the selected accounts (or only report them when ``dry_run``)."""
    if all(getattr(changes, f) is None for f in changes.__struct_fields__):
        raise InvalidInput("set", "give at least one attribute to change")
    add, remove = changes.registers_add or [], changes.registers_remove or []
    both = sorted(set(add) & set(remove))
    if both:
        raise InvalidInput("set.registers_remove", f"both added and removed: {', '.join(both)}")
    async with conn.transaction():
        await conn.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")
        await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        if changes.tariff_code is not None and not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM tariffs WHERE code = $1)", changes.tariff_code
        ):
            raise InvalidInput("set.tariff_code", f"unknown tariff {changes.tariff_code!r}")
        ids, not_found = await _select(
            conn, account_ids=account_ids, client_ids=client_ids, account_filter=account_filter
        )
        params = (
            ids,
            changes.consumer_type,
            list(dict.fromkeys(add)) or None,
            remove or None,
            changes.destroyed_housing,
            changes.tariff_code,
            changes.status,
        )
        try:
            rows = await conn.fetch(_PREVIEW if dry_run else _APPLY, *params)
        except asyncpg.LockNotAvailableError:
            raise Conflict(
                "some of the selected accounts are being changed by another request; "
                "nothing was changed, try again"
            ) from None
        except asyncpg.QueryCanceledError:
            raise Conflict(
                f"the mass edit did not finish within {STATEMENT_TIMEOUT} and was "
                "cancelled; nothing was changed"
            ) from None
        records = [_record(r) for r in rows]
        if not dry_run:
            await audit.record(
                conn,
                actor,
                [
                    Change("account", str(rec.account_id), "update", c.field, c.old, c.new)
                    for rec in records
                    for c in rec.changes
                ],
            )
    return MassEditReport(
        dry_run=dry_run,
        matched=len(ids),
        changed=len(records),
        unchanged=len(ids) - len(records),
        records=records[:DETAIL_CAP],
        records_capped=len(records) > DETAIL_CAP,
        not_found=not_found,
    )
