"""The worker side of realtime messages: the campaign pipeline, for the messages of one post.

A triggered or operator message goes through exactly the campaign path (the send rules
of ``rules.batch``: stop list, missing contact, consent, air-raid and quiet-hours holds
unless urgent; rendering, rate limits, the provider with retries, fallback down the
chain, one outcome transaction), with these differences: its ids are 't<row>:<client>:<step>' /
'o<row>:<client>:<step>'; it is never paused; it waits for rate-limit tokens at most
``TOKEN_WAIT_SECONDS`` and is then held (reason ``rate_limit``) until tokens are due, so
a realtime worker slot is never tied up behind a saturated channel; and its outcome
marks its realtime_messages row done at the step it reached; a triggered message's
template may read its event's data as ``event.<key>``. The messages of one queue
message are grouped by template version and chain, and each group is one batch.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import msgspec

from dispatcher import deadlines, outcomes
from dispatcher.envelopes import RealtimeMessages, realtime_message_id
from dispatcher.recipients import Recipient, load_recipients
from dispatcher.send.pipeline import Batch, CampaignInfo, Context
from dispatcher.templating import store as template_store
from dispatcher.templating.env import EVENT
from dispatcher.templating.templates import CompiledTemplate
from rules import consent
from rules.decision import Verdicts

T = TypeVar("T")

TOKEN_WAIT_SECONDS = 2.0

_CLAIM = """
UPDATE realtime_messages m SET attempts = attempts + 1
FROM unnest($1::bigint[], $2::int[]) AS r(u, s), message_templates t
WHERE m.id = r.u AND m.step = r.s AND NOT m.done AND m.due_at <= herald_now() AND t.id = m.template_id
RETURNING m.id, m.kind, m.client_id, m.account_id, m.template_id, m.template_version,
          m.channel_chain, m.receipt_timeout_seconds, m.step, m.attempts, t.topic, m.variables,
          m.producer_id, m.event_id
"""

# The data of the events that triggered the messages: the template's ``event.*``.
_EVENTS = """
SELECT n.c, e.data
FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS n(c, p, e)
JOIN producer_events e ON e.producer_id = n.p AND e.event_id = n.e
"""

# The template variables of one chosen account (an operator sending about that account).
_ACCOUNT = """
SELECT a.or_number, a.eic_code, a.region_code, r.name_uk AS region, a.city,
       concat_ws(', ', a.city, a.street, a.building,
                 CASE WHEN a.flat IS NOT NULL THEN 'кв. ' || a.flat END) AS address,
       t.name_uk AS tariff, t.price_per_m3 AS tariff_price, b.balance, b.debt, b.due_date,
       b.last_charge_amount, b.last_payment_amount, b.last_payment_at AS last_payment_date
FROM accounts a
LEFT JOIN regions r ON r.code = a.region_code
LEFT JOIN tariffs t ON t.code = a.tariff_code
LEFT JOIN billing_snapshots b ON b.account_id = a.id
WHERE a.id = $1 AND a.client_id = $2
"""
_ACCOUNT_TEXT = ("or_number", "eic_code", "region", "city", "address", "tariff")
_ACCOUNT_VALUES = (
    "tariff_price",
    "balance",
    "debt",
    "due_date",
    "last_charge_amount",
    "last_payment_amount",
    "last_payment_date",
)


async def handle(ctx: Context, envelope: RealtimeMessages) -> None:
    """Process the referenced messages still at their step, grouped by template and chain."""
    ctx.realtime_started()  # campaign batches of this process yield meanwhile
    try:
        await _handle(ctx, envelope)
    finally:
        ctx.realtime_finished()


async def _handle(ctx: Context, envelope: RealtimeMessages) -> None:
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            _CLAIM, [u for u, _ in envelope.refs], [s for _, s in envelope.refs]
        )
    # (kind, template id, version, chain, receipt timeout, step, topic)
    groups: dict[tuple[str, int, int, tuple[str, ...], int, int, str], list[asyncpg.Record]] = (
        defaultdict(list)
    )
    for row in rows:
        groups[
            (
                row["kind"],
                row["template_id"],
                row["template_version"],
                tuple(row["channel_chain"]),
                row["receipt_timeout_seconds"],
                row["step"],
                row["topic"],
            )
        ].append(row)
    for (kind, template_id, version, chain, timeout, step, topic), members in groups.items():
        # A batch holds each client once: a client's second message goes in the next round.
        rounds: list[dict[int, asyncpg.Record]] = []
        for row in members:
            free = next((r for r in rounds if row["client_id"] not in r), None)
            if free is None:
                free = {}
                rounds.append(free)
            free[row["client_id"]] = row
        for units in rounds:
            info = CampaignInfo(
                min(r["id"] for r in units.values()),
                chain,
                template_id,
                version,
                topic,
                timeout,
                None,
            )
            batch = RealtimeBatch(ctx, info, kind, units, step)
            batch.retried = any(r["attempts"] > 1 for r in units.values())
            await batch.run()


class RealtimeBatch(Batch):
    """Realtime messages of one template version and chain, each client once."""

    def __init__(
        self,
        ctx: Context,
        info: CampaignInfo,
        kind: str,
        units: dict[int, asyncpg.Record],
        step: int,
    ) -> None:
        super().__init__(ctx, info, list(units), step, info.id, "running")
        self.kind = kind
        self.units = {client: row["id"] for client, row in units.items()}
        self.accounts = {
            client: row["account_id"]
            for client, row in units.items()
            if row["account_id"] is not None
        }
        self.variables = {
            client: row["variables"] for client, row in units.items() if row["variables"]
        }
        self.triggered_by = {
            client: (row["producer_id"], row["event_id"])
            for client, row in units.items()
            if row["event_id"] is not None
        }

    def mid(self, client_id: int, step: int) -> str:
        return realtime_message_id(self.kind, self.units[client_id], client_id, step)

    @property
    def event_campaign_id(self) -> int | None:
        return None

    async def _refresh_state(self) -> str:
        return "running"  # realtime messages are never paused

    async def _yield(self) -> None:
        return  # realtime work is what the others yield to

    async def _await_receipts(self, ids: list[str]) -> None:
        await deadlines.await_realtime_receipts(
            self.ctx.redis, self.ctx.settings, ids, self.campaign.receipt_timeout
        )

    @property
    def token_wait_seconds(self) -> float:
        return TOKEN_WAIT_SECONDS

    async def _inputs(
        self,
    ) -> tuple[
        dict[int, Recipient], dict[str, str], Verdicts, consent.Consents, CompiledTemplate, bool
    ]:
        # The same reads as a campaign batch, side by side on their own connections: a
        # realtime message waits for the slowest one instead of their sum.
        campaign, ids = self.campaign, self.client_ids

        async def on_conn(read: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
            async with self.ctx.pool.acquire() as conn:
                return await read(conn)

        async def finals(conn: asyncpg.Connection) -> dict[str, str]:
            if not self.retried:
                return {}
            return await outcomes.already_final(
                conn,
                [self.mid(c, s) for c in ids for s in range(self.first_step, len(campaign.chain))],
            )

        found, done, stopped, consents, (template, urgent) = await asyncio.gather(
            on_conn(self._load_recipients),
            on_conn(finals),
            on_conn(lambda conn: self._stopped(conn, ids)),
            on_conn(lambda conn: consent.load_consents(conn, ids, campaign.chain, campaign.topic)),
            on_conn(self._load_template),
        )
        return {r.client_id: r for r in found}, done, stopped, consents, template, urgent

    async def _load_template(self, conn: asyncpg.Connection) -> tuple[CompiledTemplate, bool]:
        # A pinned version never changes; its urgency is re-read every few seconds.
        info = self.campaign
        found = await self.ctx.cached(
            f"template:{info.template_id}:{info.template_version}",
            lambda c: template_store.load_for_sending(
                c, self.ctx.engine, info.template_id, info.template_version
            ),
            conn,
        )
        return found

    async def _load_recipients(self, conn: asyncpg.Connection) -> list[Recipient]:
        found = await load_recipients(conn, self.client_ids, self.ctx.organisation)
        if self.accounts:
            found = [
                await self._with_account(conn, r) if r.client_id in self.accounts else r
                for r in found
            ]
        if self.variables:
            found = [
                msgspec.structs.replace(r, variables={**r.variables, **self.variables[r.client_id]})
                if r.client_id in self.variables
                else r
                for r in found
            ]
        if self.triggered_by:
            found = await self._with_events(conn, found)
        return found

    async def _with_events(
        self, conn: asyncpg.Connection, recipients: list[Recipient]
    ) -> list[Recipient]:
        """The recipients of triggered messages with their event's data as ``event``."""
        keys = self.triggered_by
        rows = await conn.fetch(
            _EVENTS, list(keys), [p for p, _ in keys.values()], [e for _, e in keys.values()]
        )
        data = {r["c"]: r["data"] for r in rows}
        return [
            msgspec.structs.replace(r, variables={**r.variables, EVENT: data[r.client_id]})
            if r.client_id in data
            else r
            for r in recipients
        ]

    async def _with_account(self, conn: asyncpg.Connection, recipient: Recipient) -> Recipient:
        """The recipient with the variables of the account the message is about."""
        account = await conn.fetchrow(
            _ACCOUNT, self.accounts[recipient.client_id], recipient.client_id
        )
        if account is None:
            return recipient  # the account left the client since: the primary one serves
        variables = dict(recipient.variables)
        variables.update((k, account[k] or "") for k in _ACCOUNT_TEXT)
        variables.update((k, account[k]) for k in _ACCOUNT_VALUES)
        payment_url = self.ctx.organisation.payment_url.rstrip("/")
        variables["payment_url"] = f"{payment_url}/{account['or_number']}"
        return msgspec.structs.replace(
            recipient, region_code=account["region_code"], variables=variables
        )

    async def _mark_done(self, conn: asyncpg.Connection) -> None:
        # The step each reached: a receipt or a release acts on a row only at that step.
        # A row already further on was moved by a failed receipt that overtook this commit.
        reached = dict.fromkeys(self.units, self.first_step)
        for event in self.events:
            reached[event.client_id] = max(reached[event.client_id], event.step)
        await conn.execute(
            "UPDATE realtime_messages m SET done = true, done_at = herald_now(), step = r.s "
            "FROM unnest($1::bigint[], $2::int[]) AS r(u, s) WHERE m.id = r.u AND m.step <= r.s",
            [self.units[c] for c in reached],
            list(reached.values()),
        )

    async def _count(self) -> None:
        await outcomes.count(self.ctx.redis, self.ctx.settings, None, self.events)
