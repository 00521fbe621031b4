"""Intake (SR-01): an inbound item of any channel becomes a case, or joins its open case.

One transaction per item: replay check (the item's external id is unique), thread lookup
(the chat's open case; the e-mail thread by Message-ID/References or the case number in
the subject), then either a message appended (with the client_reply automations) or a
new case identified, classified and flagged as repeat/duplicate. A few indexed queries:
well under the 1 s target.
"""

from __future__ import annotations

import asyncpg
import msgspec

from crm.cases import automation, classify, duplicates, groups, rule_engine, store
from crm.cases.channels import (
    AppRequest,
    CallRecord,
    Chosen,
    FormSubmission,
    Inbound,
    InboundEmail,
    TelegramUpdate,
    ViberCallback,
    WalkInRegistration,
    app_inbound,
    call_inbound,
    email_inbound,
    form_inbound,
    telegram_inbound,
    viber_inbound,
    walk_in_inbound,
)
from crm.cases.identify import Identification, identify
from crm.cases.store import NewEvent
from crm.cases.text import text_hash
from crm.cases.types import Case, IntakeResult
from herald import audit
from herald.audit import Actor, Change
from herald.errors import InvalidInput
from herald.phones import normalise_phone

CTI = Actor(login="cti")
VIBER = Actor(login="viber")
TELEGRAM = Actor(login="telegram")
# Advisory-lock class of chat threads: two messages of one chat never open two cases.
_CHAT_LOCK_CLASS = 0x4341_5345  # "CASE"
_MERGE_HOPS = 10


async def _replayed(conn: asyncpg.Connection, external_id: str) -> IntakeResult | None:
    row = await conn.fetchrow(
        "SELECT c.id, c.number, c.status FROM case_events e JOIN cases c ON c.id = e.case_id "
        "WHERE e.external_id = $1",
        external_id,
    )
    if row is None:
        return None
    return IntakeResult(
        row["id"], row["number"], row["status"], created=False, appended=False, replayed=True
    )


async def _follow_merges(conn: asyncpg.Connection, case_id: int | None) -> Case | None:
    """The open case a thread continues in (following merges), locked; None if closed."""
    for _ in range(_MERGE_HOPS):
        if case_id is None:
            return None
        case = await store.get_case(conn, case_id, lock=True)
        if case.merged_into_id is None:
            return None if case.status == "closed" else case
        case_id = case.merged_into_id
    return None


async def _open_thread(conn: asyncpg.Connection, item: Inbound) -> Case | None:
    if item.chat_ref is not None:
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))", _CHAT_LOCK_CLASS, item.chat_ref
        )
        found = await conn.fetchval(
            "SELECT id FROM cases WHERE chat_ref = $1 AND status <> 'closed' "
            "ORDER BY id DESC LIMIT 1",
            item.chat_ref,
        )
        return await _follow_merges(conn, found)
    if item.thread_refs:
        found = await conn.fetchval(
            "SELECT case_id FROM case_events WHERE external_id = ANY($1::text[]) "
            "ORDER BY id DESC LIMIT 1",
            list(item.thread_refs),
        )
        if found is not None:
            return await _follow_merges(conn, found)
    if item.thread_number is not None:
        # A case number is guessable: it threads only for the case's own client or sender.
        found = await conn.fetchval(
            "SELECT id FROM cases WHERE number = $1 AND ((client_id IS NOT NULL AND client_id = $2) "
            "OR (contact_email IS NOT NULL AND lower(contact_email) = lower($3)))",
            item.thread_number,
            item.client_id,
            item.email,
        )
        return await _follow_merges(conn, found)
    return None


async def _identify(conn: asyncpg.Connection, item: Inbound) -> tuple[Identification, str | None]:
    phone = normalise_phone(item.phone) if item.phone else None
    found = await identify(
        conn, client_id=item.client_id, or_number=item.or_number, phone=phone, email=item.email
    )
    return found, phone


async def _append(
    conn: asyncpg.Connection, actor: Actor, case: Case, item: Inbound
) -> IntakeResult:
    await store.append_events(
        conn,
        actor,
        case.id,
        [
            NewEvent(
                kind="message",
                channel=item.channel,
                direction="in",
                external_id=item.external_id,
                body=item.text,
                data={"subject": item.subject, **(item.data or {})},
            )
        ],
    )
    await conn.execute(
        "UPDATE cases SET last_inbound_at = herald_now(), updated_at = herald_now() WHERE id = $1",
        case.id,
    )
    await audit.record(
        conn,
        actor,
        [
            Change(
                "case",
                str(case.id),
                "message",
                None,
                None,
                {"channel": item.channel, "external_id": item.external_id},
            )
        ],
    )
    if case.client_id is None and (item.phone or item.email or item.or_number or item.client_id):
        # The client shared a contact in the chat: link the anonymous case if it is unambiguous.
        found, _ = await _identify(conn, item)
        if found.client_id is not None:
            case = await duplicates.link(conn, actor, case, found)
    case = await automation.on_client_reply(conn, case)
    return IntakeResult(case.id, case.number, case.status, created=False, appended=True)


async def _check_chosen(conn: asyncpg.Connection, chosen: Chosen) -> None:
    if chosen.category_id is not None and not await conn.fetchval(
        "SELECT is_active FROM case_categories WHERE id = $1", chosen.category_id
    ):
        raise InvalidInput("category_id", f"no active case category {chosen.category_id}")


async def _create(
    conn: asyncpg.Connection, actor: Actor, item: Inbound, chosen: Chosen | None
) -> IntakeResult:
    if chosen is not None:
        await _check_chosen(conn, chosen)
    found, phone = await _identify(conn, item)
    attrs = (
        await classify.client_attributes(conn, found.client_id)
        if found.client_id is not None
        else classify.ClientAttributes()
    )
    proposal = classify.propose(
        await classify.active_rules(conn),
        subject=item.subject,
        text=item.text,
        channel=item.channel,
        identified=found.client_id is not None,
        attrs=attrs,
    )
    chosen = chosen or Chosen()
    category_id = chosen.category_id or proposal.category_id
    case_type = chosen.case_type or proposal.case_type
    priority = chosen.priority or proposal.priority or "normal"
    group_code, routing_rule_id = await groups.choose_group(
        conn, channel=item.channel, category_id=category_id, case_type=case_type, priority=priority
    )
    settings = await duplicates.get_settings(conn)
    digest = text_hash(item.subject, item.text)
    duplicate = await duplicates.find_duplicate(
        conn,
        client_id=found.client_id,
        channel=item.channel,
        subject=item.subject,
        text=item.text,
        text_hash=digest,
        category_id=category_id,
        settings=settings,
    )
    duplicate_of = duplicate.original_id if duplicate is not None else None
    duplicate_match = msgspec.to_builtins(duplicate) if duplicate is not None else None
    repeat_of = await duplicates.find_repeat(
        conn,
        client_id=found.client_id,
        category_id=category_id,
        window_days=settings.repeat_window_days,
    )
    row = await conn.fetchrow(
        """
        INSERT INTO cases (channel, client_id, account_id, identified_by, candidate_client_ids,
                           contact_name, contact_phone, contact_email, contact_or, chat_ref,
                           subject, body, text_hash, category_id, case_type, priority,
                           proposed_category_id, proposed_type, proposed_priority,
                           proposed_rule_id, is_repeat, repeat_of_id, duplicate_of_id,
                           created_by, created_by_login, group_code)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                $19, $20, $21, $22, $23, $24, $25, $26)
        RETURNING id, number, status
        """,
        item.channel,
        found.client_id,
        found.account_id,
        found.identified_by,
        list(found.candidates),
        item.name,
        phone or item.phone,
        item.email,
        item.or_number,
        item.chat_ref,
        item.subject,
        item.text,
        digest,
        category_id,
        case_type,
        priority,
        proposal.category_id,
        proposal.case_type,
        proposal.priority,
        proposal.rule_id,
        repeat_of is not None,
        repeat_of,
        duplicate_of,
        actor.id,
        actor.login,
        group_code,
    )
    case_id = row["id"]
    proposed = {
        "category_id": proposal.category_id,
        "case_type": proposal.case_type,
        "priority": proposal.priority,
        "rule_id": proposal.rule_id,
    }
    new_events = [
        NewEvent(
            kind="created",
            channel=item.channel,
            to_status=row["status"],
            data={
                "identified_by": found.identified_by,
                "client_id": found.client_id,
                "candidates": list(found.candidates),
                "proposed": proposed,
                "repeat_of_id": repeat_of,
                "duplicate_of_id": duplicate_of,
                "duplicate_match": duplicate_match,
                "group_code": group_code,
                "routing_rule_id": routing_rule_id,
            },
        ),
        NewEvent(
            kind="message",
            channel=item.channel,
            direction="in",
            external_id=item.external_id,
            body=item.text,
            data={"subject": item.subject, **(item.data or {})},
        ),
    ]
    chosen_values = {"category_id": category_id, "case_type": case_type, "priority": priority}
    if chosen != Chosen() and any(chosen_values[k] != proposed[k] for k in chosen_values):
        new_events.append(
            NewEvent(
                kind="classification",
                data={"proposed": proposed, "before": None, "chosen": chosen_values},
            )
        )
    if duplicate_of is not None or repeat_of is not None:
        new_events.append(
            NewEvent(
                kind="flag",
                data={
                    "is_repeat": repeat_of is not None,
                    "repeat_of_id": repeat_of,
                    "duplicate_of_id": duplicate_of,
                    "duplicate_match": duplicate_match,
                },
            )
        )
    await store.append_events(conn, actor, case_id, new_events)
    await audit.record(
        conn,
        actor,
        [
            Change(
                "case",
                str(case_id),
                "create",
                None,
                None,
                {
                    "number": row["number"],
                    "channel": item.channel,
                    "client_id": found.client_id,
                    "status": row["status"],
                    **chosen_values,
                    "is_repeat": repeat_of is not None,
                    "duplicate_of_id": duplicate_of,
                    "group_code": group_code,
                },
            )
        ],
    )
    if found.client_id is not None:
        await store.on_timeline(conn, await store.get_case(conn, case_id))
    return IntakeResult(case_id, row["number"], row["status"], created=True, appended=False)


async def ingest(
    conn: asyncpg.Connection, actor: Actor, item: Inbound, *, chosen: Chosen | None = None
) -> IntakeResult:
    """Turn one inbound item into a case or a message of its open case (idempotent by the
    item's external id)."""
    try:
        async with conn.transaction():
            if item.external_id is not None:
                replay = await _replayed(conn, item.external_id)
                if replay is not None:
                    return replay
            thread = await _open_thread(conn, item)
            if thread is not None:
                result = await _append(conn, actor, thread, item)
            else:
                result = await _create(conn, actor, item, chosen)
            # The case rules act in this transaction (issue 15).
            if await rule_engine.process(conn, result.case_id):
                status = await conn.fetchval(
                    "SELECT status FROM cases WHERE id = $1", result.case_id
                )
                result = msgspec.structs.replace(result, status=status)
            return result
    except asyncpg.UniqueViolationError as exc:
        # The same item arrived twice at once: the other delivery won; report its case.
        if item.external_id is None or exc.constraint_name != "case_events_external_key":
            raise
        replay = await _replayed(conn, item.external_id)
        if replay is None:
            raise
        return replay


# -- one entry point per channel ----------------------------------------------------------


async def from_call(conn: asyncpg.Connection, call: CallRecord) -> IntakeResult:
    """A finished or missed call (the CTI hang-up event) becomes a case."""
    return await ingest(conn, CTI, call_inbound(call))


async def from_viber(conn: asyncpg.Connection, callback: ViberCallback) -> IntakeResult | None:
    """A Viber bot callback; None for events that are not messages."""
    item = viber_inbound(callback)
    return None if item is None else await ingest(conn, VIBER, item)


async def from_telegram(conn: asyncpg.Connection, update: TelegramUpdate) -> IntakeResult | None:
    """A Telegram bot update; None for updates that are not new messages."""
    item = telegram_inbound(update)
    return None if item is None else await ingest(conn, TELEGRAM, item)


async def from_form(conn: asyncpg.Connection, actor: Actor, form: FormSubmission) -> IntakeResult:
    return await ingest(conn, actor, form_inbound(form))


async def from_email(conn: asyncpg.Connection, actor: Actor, mail: InboundEmail) -> IntakeResult:
    return await ingest(conn, actor, email_inbound(mail))


async def from_app(conn: asyncpg.Connection, actor: Actor, req: AppRequest) -> IntakeResult:
    return await ingest(conn, actor, app_inbound(req))


async def from_walk_in(
    conn: asyncpg.Connection, actor: Actor, reg: WalkInRegistration
) -> IntakeResult:
    """An operator registers a case by hand; their classification overrides the proposal."""
    item, chosen = walk_in_inbound(reg)
    return await ingest(conn, actor, item, chosen=chosen)
