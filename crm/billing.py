"""The billing connector: what billing tells about an account, and Herald's cache of it.

Billing (the customer's system of record for money) is reached through a
``BillingConnector``; ``providers.billing.HttpBillingConnector`` speaks its HTTP API
(``GET {billing_url}/v1/accounts/{or_number}``, bearer token), which
``providers/sim/billing.py`` simulates. ``BillingCache`` keeps the last answer per
account in ``billing_snapshots`` and decides when to ask again: data older than the
maximum age, a row not written by the connector, or an operator's explicit request.
A refresh is single-flight per account within a process; a card waits for it only a
short while and otherwise shows the cached data marked stale while the refresh
finishes in the background. A billing failure never fails a card.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any, Literal

import asyncpg
import msgspec

from herald import clock
from herald.errors import HeraldError
from providers.billing import (
    REQUEST_TIMEOUT_SECONDS,
    BillingAccountUnknown,
    BillingConnector,
    BillingData,
    BillingError,
    BillingTimeout,
    BillingUnavailable,
    Charge,
    Equipment,
    Payment,
)

log = logging.getLogger("herald.billing")


# -- What Herald knows: the cached state and the card's billing block ----------------------


class BillingState(msgspec.Struct, frozen=True, kw_only=True):
    """Billing data of one account as Herald holds it, and when it was fetched."""

    balance: Decimal
    debt: Decimal
    due_date: dt.date | None
    tariff_code: str | None
    charges: list[Charge]
    payments: list[Payment]
    equipment: list[Equipment]
    fetched_at: dt.datetime
    complete: bool  # False: a row not written by the connector (e.g. seeded totals only)


SNAPSHOT_COLUMNS = (
    "b.balance AS b_balance, b.debt AS b_debt, b.due_date AS b_due_date, "
    "b.tariff_code AS b_tariff_code, b.charges AS b_charges, "
    "b.payments AS b_payments, b.equipment AS b_equipment, "
    "b.fetched_at AS b_fetched_at"
)
"""The billing_snapshots columns (table alias ``b``) that ``state_from_row`` reads."""


def state_from_row(row: asyncpg.Record) -> BillingState | None:
    """The cached state from a row selecting SNAPSHOT_COLUMNS, or None without a snapshot."""
    if row["b_fetched_at"] is None:
        return None
    charges = row["b_charges"]
    return BillingState(
        balance=row["b_balance"],
        debt=row["b_debt"],
        due_date=row["b_due_date"],
        tariff_code=row["b_tariff_code"],
        charges=msgspec.convert(charges or [], list[Charge]),
        payments=msgspec.convert(row["b_payments"] or [], list[Payment]),
        equipment=msgspec.convert(row["b_equipment"] or [], list[Equipment]),
        fetched_at=row["b_fetched_at"],
        complete=charges is not None,
    )


def state_from_data(data: BillingData, fetched_at: dt.datetime) -> BillingState:
    return BillingState(
        balance=data.balance,
        debt=data.debt,
        due_date=data.due_date,
        tariff_code=data.tariff_code,
        charges=data.charges,
        payments=data.payments,
        equipment=data.equipment,
        fetched_at=fetched_at,
        complete=True,
    )


RefreshOutcome = Literal[
    "not_needed", "done", "pending", "unavailable", "timeout", "unknown_account"
]


class BillingBlock(msgspec.Struct, kw_only=True):
    """An account's billing data on the card.

    ``available``: any data is shown (fresh or cached). ``stale``: it is older than the
    maximum age (or there is none) because this read could not refresh it. ``refresh``
    says what this read did: not_needed (the cache was fresh), done (fetched now),
    pending (billing is slow; the refresh goes on in the background), unavailable or
    timeout (billing failed; ``error`` says how), unknown_account (billing has no such
    account).
    """

    available: bool
    stale: bool
    fetched_at: dt.datetime | None
    refresh: RefreshOutcome
    error: str | None = None
    balance: Decimal | None = None
    debt: Decimal | None = None
    due_date: dt.date | None = None
    tariff_code: str | None = None
    charges: list[Charge] = []
    payments: list[Payment] = []


class ResolvedBilling(msgspec.Struct, frozen=True):
    """One account's billing block and billing's equipment list (shown with the account)."""

    block: BillingBlock
    equipment: list[Equipment]


class AccountRef(msgspec.Struct, frozen=True):
    """An account whose billing a read needs, with what the cache holds for it."""

    account_id: int
    or_number: str
    cached: BillingState | None


RecordReadings = Callable[[asyncpg.Connection, int, list[dict[str, Any]]], Awaitable[int]]
"""Stores GDO readings of an account (crm.meters.record_billing_readings)."""


class Refreshed(msgspec.Struct, frozen=True):
    state: BillingState
    data: BillingData


class _Flight:
    """One refresh in progress: ``fetched`` resolves once billing answered, ``task`` once stored."""

    __slots__ = ("fetched", "task")

    def __init__(self, fetched: asyncio.Future[Refreshed], task: asyncio.Task[Refreshed]) -> None:
        self.fetched = fetched
        self.task = task


_UPSERT = """
INSERT INTO billing_snapshots AS b (
    account_id, balance, debt, last_charge_amount, last_charge_period, last_payment_amount,
    last_payment_at, due_date, fetched_at, tariff_code, charges, payments, equipment,
    gdo_readings, refreshed_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
ON CONFLICT (account_id) DO UPDATE SET
    balance = EXCLUDED.balance, debt = EXCLUDED.debt,
    last_charge_amount = EXCLUDED.last_charge_amount,
    last_charge_period = EXCLUDED.last_charge_period,
    last_payment_amount = EXCLUDED.last_payment_amount,
    last_payment_at = EXCLUDED.last_payment_at, due_date = EXCLUDED.due_date,
    fetched_at = EXCLUDED.fetched_at, tariff_code = EXCLUDED.tariff_code,
    charges = EXCLUDED.charges, payments = EXCLUDED.payments, equipment = EXCLUDED.equipment,
    gdo_readings = EXCLUDED.gdo_readings, refreshed_by = EXCLUDED.refreshed_by
-- Another process may have stored a newer answer meanwhile: keep it.
WHERE b.fetched_at <= EXCLUDED.fetched_at
"""


def _utcnow() -> dt.datetime:
    return clock.now()


class BillingCache:
    """Reads billing through the cache: refresh rules, single flight, background completion."""

    def __init__(
        self,
        connector: BillingConnector,
        pool: asyncpg.Pool,
        *,
        max_age_seconds: float,
        wait_seconds: float,
        record_readings: RecordReadings | None = None,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self._connector = connector
        self._pool = pool
        self.max_age = dt.timedelta(seconds=max_age_seconds)
        self.wait_seconds = wait_seconds
        self._record_readings = record_readings
        self._clock = clock
        self._flights: dict[int, _Flight] = {}

    @property
    def in_flight(self) -> int:
        """Refreshes running now (fetching or storing)."""
        return len(self._flights)

    def is_current(self, state: BillingState | None) -> bool:
        """Whether cached data may be shown without asking billing."""
        return (
            state is not None
            and state.complete
            and state.fetched_at >= self._clock() - self.max_age
        )

    def begin(
        self, accounts: Sequence[AccountRef], *, force: bool, refreshed_by: str
    ) -> BillingRead:
        """Start the refreshes these accounts need (all of them with ``force``); do not wait."""
        flights = {
            a.account_id: self._start(a.account_id, a.or_number, refreshed_by)
            for a in accounts
            if force or not self.is_current(a.cached)
        }
        return BillingRead(
            self, list(accounts), flights, asyncio.get_running_loop().time() + self.wait_seconds
        )

    async def refresh_now(
        self, accounts: Sequence[AccountRef], *, refreshed_by: str
    ) -> dict[int, ResolvedBilling]:
        """Refresh every account and wait until billing answered and the answer is stored."""
        read = self.begin(accounts, force=True, refreshed_by=refreshed_by)
        tasks = [f.task for f in read.flights.values()]
        if tasks:
            # asyncio.wait never cancels what it waits for: a client going away does not
            # abort a refresh other readers may share.
            await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT_SECONDS + 5)
        return read.resolve()

    def _start(self, account_id: int, or_number: str, refreshed_by: str) -> _Flight:
        flight = self._flights.get(account_id)
        if flight is not None:
            return flight
        fetched: asyncio.Future[Refreshed] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            self._refresh(account_id, or_number, refreshed_by, fetched),
            name=f"billing-refresh-{account_id}",
        )
        flight = _Flight(fetched, task)
        self._flights[account_id] = flight
        task.add_done_callback(lambda _: self._finished(account_id, flight))
        return flight

    def _finished(self, account_id: int, flight: _Flight) -> None:
        if self._flights.get(account_id) is flight:
            del self._flights[account_id]
        # Mark outcomes as seen: a failed refresh nobody waited for is normal here.
        for future in (flight.fetched, flight.task):
            if future.done() and not future.cancelled():
                future.exception()

    async def _refresh(
        self, account_id: int, or_number: str, refreshed_by: str, fetched: asyncio.Future[Refreshed]
    ) -> Refreshed:
        try:
            try:
                data = await self._connector.fetch(or_number)
            except BillingError:
                raise
            except Exception as exc:
                log.exception("billing connector failed for %s", or_number)
                raise BillingUnavailable(f"billing refresh failed: {exc}") from exc
        except BillingError as exc:
            fetched.set_exception(exc)
            log.warning("billing refresh of %s failed: %s", or_number, exc.detail)
            raise
        except BaseException:
            fetched.cancel()
            raise
        refreshed = Refreshed(state_from_data(data, self._clock()), data)
        fetched.set_result(refreshed)
        try:
            await self._store(account_id, refreshed, refreshed_by)
        except Exception:
            # The card already has the data; the next read simply asks billing again.
            log.exception("could not store the billing data of account %d", account_id)
        return refreshed

    async def _store(self, account_id: int, refreshed: Refreshed, refreshed_by: str) -> None:
        data, state = refreshed.data, refreshed.state
        last_charge = max(data.charges, key=lambda c: (c.period, c.posted_at), default=None)
        last_payment = max(data.payments, key=lambda p: p.paid_at, default=None)
        builtins = msgspec.to_builtins
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                _UPSERT,
                account_id,
                data.balance,
                data.debt,
                last_charge.amount if last_charge else None,
                last_charge.period if last_charge else None,
                last_payment.amount if last_payment else None,
                last_payment.paid_at.astimezone(clock.business_tz()).date()
                if last_payment
                else None,
                data.due_date,
                state.fetched_at,
                data.tariff_code,
                builtins(data.charges),
                builtins(data.payments),
                builtins(data.equipment),
                builtins(data.gdo_readings),
                refreshed_by,
            )
            if self._record_readings is not None and data.gdo_readings:
                items = [
                    {"meter_serial": g.meter_serial, "value": g.value, "read_on": g.read_on}
                    for g in data.gdo_readings
                ]
                try:
                    async with conn.transaction():  # a savepoint: readings never lose the snapshot
                        await self._record_readings(conn, account_id, items)
                except Exception:
                    log.exception("could not record GDO readings of account %d", account_id)

    async def close(self) -> None:
        """Stop refreshes still running (at shutdown) and wait until they have stopped."""
        flights = list(self._flights.values())
        for flight in flights:
            flight.task.cancel()
        if flights:
            await asyncio.gather(*(f.task for f in flights), return_exceptions=True)


class BillingRead:
    """The billing part of one card read: refreshes started, and a deadline to wait for them."""

    def __init__(
        self,
        cache: BillingCache,
        accounts: list[AccountRef],
        flights: dict[int, _Flight],
        deadline: float,
    ) -> None:
        self._cache = cache
        self.accounts = accounts
        self.flights = flights
        self._deadline = deadline

    async def wait(self) -> dict[int, ResolvedBilling]:
        """Wait for billing's answers until the deadline, then the block of each account."""
        waiting = [f.fetched for f in self.flights.values() if not f.fetched.done()]
        remaining = self._deadline - asyncio.get_running_loop().time()
        if waiting and remaining > 0:
            await asyncio.wait(waiting, timeout=remaining)
        return self.resolve()

    def resolve(self) -> dict[int, ResolvedBilling]:
        """The block of each account from what is known now (no waiting)."""
        return {a.account_id: self._resolve(a) for a in self.accounts}

    def _resolve(self, account: AccountRef) -> ResolvedBilling:
        cached = account.cached
        flight = self.flights.get(account.account_id)
        refresh: RefreshOutcome = "not_needed"
        error: str | None = None
        if flight is not None:
            fetched = flight.fetched
            if not fetched.done():
                refresh = "pending"
            elif fetched.cancelled():
                refresh, error = "unavailable", "the refresh was stopped"
            elif (exc := fetched.exception()) is None:
                return _resolved(fetched.result().state, stale=False, refresh="done", error=None)
            else:
                refresh = (
                    "timeout"
                    if isinstance(exc, BillingTimeout)
                    else "unknown_account"
                    if isinstance(exc, BillingAccountUnknown)
                    else "unavailable"
                )
                error = exc.detail if isinstance(exc, HeraldError) else str(exc)
        stale = flight is not None and not self._cache.is_current(cached)
        if cached is None:
            block = BillingBlock(
                available=False, stale=True, fetched_at=None, refresh=refresh, error=error
            )
            return ResolvedBilling(block, [])
        return _resolved(cached, stale=stale, refresh=refresh, error=error)


def _resolved(
    state: BillingState, *, stale: bool, refresh: RefreshOutcome, error: str | None
) -> ResolvedBilling:
    block = BillingBlock(
        available=True,
        stale=stale,
        fetched_at=state.fetched_at,
        refresh=refresh,
        error=error,
        balance=state.balance,
        debt=state.debt,
        due_date=state.due_date,
        tariff_code=state.tariff_code,
        charges=state.charges,
        payments=state.payments,
    )
    return ResolvedBilling(block, state.equipment)
