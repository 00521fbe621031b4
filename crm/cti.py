"""Incoming-call identification (SR-03): VICIdial call events, the client match, the agent push.

VICIdial reaches Herald through its URL callbacks (campaign / in-group "Start Call URL",
"Dispo Call URL", and the agent-screen event push) or an AGI script. Their variables are
accepted under VICIdial's own names: ``uniqueid`` / ``call_id``, ``phone_number``,
``user``, ``extension`` (``phone_login``), ``campaign``, ``dispo``, ``recording_url``,
``lead_id``, ``talk_time``, ``epoch``. Event names map onto three events:

    ringing   ringing, ring, start, start_call, call_start, incoming
    answered  answered, answer, call_answered, connected, talk
    hung_up   hung_up, hangup, hang_up, call_dead, end, dispo, dispo_set, dispo_call

Agent mapping (a decision, documented in the view): VICIdial's ``user`` is the Herald
login of the operator, compared case-insensitively. An event without ``user`` reaches the
operator an administrator mapped to its ``extension`` / ``phone_login``
(``crm.cti_extensions``). Each ringing event is pushed on the
Redis channel ``<namespace>:cti:agent:<login in lower case>``; every API process
subscribes its own operators' Server-Sent-Event streams to their channel, so the push
reaches the operator whichever process received the event.

Identification order on ringing: the caller's number (E.164, active contacts); when it
gives exactly one client that is the match; otherwise the OR number or Client_ID the
IVR collected decides when it names an existing client; otherwise the phone's candidates
(up to MAX_CANDIDATES) or "unknown".

Each (call, event) is stored once: a repost changes nothing and pushes nothing.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal

import asyncpg
import msgspec
import redis.asyncio as aioredis

from crm import cti_extensions
from crm import timeline as _timeline
from crm.cases.channels import CallRecord
from crm.cases.intake import from_call
from crm.cases.types import IntakeResult
from herald import clock
from herald.bounds import NonNegativeInt32, UnixTime
from herald.errors import InvalidInput, NotFound
from herald.phones import normalise_phone

MAX_CANDIDATES = 10
Event = Literal["ringing", "answered", "hung_up"]
Identification = Literal["match", "candidates", "unknown"]

EVENT_NAMES: dict[str, Event] = {
    **dict.fromkeys(
        ("ringing", "ring", "start", "start_call", "call_start", "incoming"), "ringing"
    ),
    **dict.fromkeys(("answered", "answer", "call_answered", "connected", "talk"), "answered"),
    **dict.fromkeys(
        ("hung_up", "hangup", "hang_up", "call_dead", "end", "dispo", "dispo_set", "dispo_call"),
        "hung_up",
    ),
}
_DIRECTIONS = {"in": "in", "inbound": "in", "out": "out", "outbound": "out", "manual": "out"}

_Short = Annotated[str, msgspec.Meta(max_length=100)]


class CallEvent(msgspec.Struct, forbid_unknown_fields=True):
    """A VICIdial call event (JSON body, or the same names as form or query parameters)."""

    event: Annotated[
        str,
        msgspec.Meta(
            min_length=1, max_length=40, description="ringing, answered, hung_up or a VICIdial name"
        ),
    ]
    # VICIdial's call identifiers: call_id (the call's caller-id string) or Asterisk's uniqueid.
    call_id: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    uniqueid: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    phone_number: Annotated[str, msgspec.Meta(min_length=1, max_length=40)] | None = None
    user: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    extension: _Short | None = None
    phone_login: _Short | None = None
    campaign: _Short | None = None
    direction: Annotated[str, msgspec.Meta(max_length=10)] | None = None
    dispo: _Short | None = None
    status: _Short | None = None
    recording_url: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
    transcript: Annotated[str, msgspec.Meta(max_length=200_000)] | None = None
    lead_id: _Short | None = None
    talk_time: NonNegativeInt32 | None = None
    epoch: UnixTime | None = None
    # What the IVR collected before the call reached an agent.
    or_number: Annotated[str, msgspec.Meta(max_length=20)] | None = None
    client_id: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)] | None = None


class AccountSummary(msgspec.Struct):
    account_id: int
    or_number: str
    eic_code: str
    address: str
    status: str
    debt: str | None


class ClientSummary(msgspec.Struct):
    client_id: int
    full_name: str
    accounts: list[AccountSummary]


class Call(msgspec.Struct):
    id: int
    call_ref: str
    direction: str
    phone: str | None
    phone_raw: str
    client_id: int | None
    identified_by: str | None
    identification: str | None
    candidate_client_ids: list[int]
    agent_login: str | None
    agent_user_id: int | None
    extension: str | None
    campaign: str | None
    ringing_at: dt.datetime | None
    answered_at: dt.datetime | None
    hung_up_at: dt.datetime | None
    disposition: str | None
    talk_time: int | None
    recording_url: str | None
    transcript: str | None


class CallPush(msgspec.Struct, omit_defaults=True):
    """What the operator's workspace receives (SSE event ``call``)."""

    event: Event
    call_id: int
    call_ref: str
    phone: str | None
    identification: Identification | None = None
    identified_by: str | None = None
    client: ClientSummary | None = None
    candidates: list[ClientSummary] = []
    # hung_up: the case the call became (or was added to, a repeat within the window).
    case_id: int | None = None
    case_number: str | None = None
    # Server clock (epoch seconds) when the event reached Herald; benchmarks measure from it.
    received_at: float = 0.0


class CallAccepted(msgspec.Struct):
    call: Call
    event: Event
    # False when this (call, event) was posted before: nothing changed, nothing pushed.
    new: bool
    identification: Identification | None
    pushed: bool


def event_name(raw: str) -> Event:
    found = EVENT_NAMES.get(raw.strip().lower())
    if found is None:
        raise InvalidInput(
            "event",
            f"unknown call event {raw!r}; use ringing, answered or hung_up "
            "(VICIdial names: start, call_answered, call_dead, dispo, ...)",
        )
    return found


def agent_channel(namespace: str, login: str) -> str:
    """The Redis pub/sub channel of one operator's live feed."""
    return f"{namespace}:cti:agent:{login.lower()}"


_SUMMARY = """
SELECT c.id, concat_ws(' ', c.last_name, c.first_name, c.middle_name) AS full_name,
       a.id AS account_id, a.or_number, a.eic_code, a.status, b.debt,
       concat_ws(', ', a.city, a.street, a.building,
                 CASE WHEN a.flat IS NOT NULL THEN 'кв. ' || a.flat END) AS address
FROM clients c
LEFT JOIN accounts a ON a.client_id = c.id
LEFT JOIN billing_snapshots b ON b.account_id = a.id
WHERE c.id = ANY($1::bigint[])
ORDER BY c.id, a.id
"""


async def client_summaries(conn: asyncpg.Connection, ids: list[int]) -> list[ClientSummary]:
    """Name and accounts of each client in ``ids`` (one query), in the order given."""
    found: dict[int, ClientSummary] = {}
    for r in await conn.fetch(_SUMMARY, ids):
        summary = found.setdefault(r["id"], ClientSummary(r["id"], r["full_name"], []))
        if r["account_id"] is not None:
            summary.accounts.append(
                AccountSummary(
                    r["account_id"],
                    r["or_number"],
                    r["eic_code"],
                    r["address"],
                    r["status"],
                    None if r["debt"] is None else str(r["debt"]),
                )
            )
    return [found[i] for i in ids if i in found]


async def identify(
    conn: asyncpg.Connection, phone: str | None, *, or_number: str | None, client_id: int | None
) -> tuple[Identification, str | None, list[int]]:
    """(identification, identified_by, client ids): see the module docstring for the order."""
    by_phone: list[int] = []
    if phone is not None:
        by_phone = [
            r[0]
            for r in await conn.fetch(
                "SELECT DISTINCT client_id FROM contacts WHERE phone_digits = $1 AND is_active "
                "ORDER BY client_id LIMIT $2",
                phone[1:],
                MAX_CANDIDATES + 1,
            )
        ]
    if len(by_phone) == 1:
        return "match", "phone", by_phone
    if or_number:
        found = await conn.fetchval(
            "SELECT client_id FROM accounts WHERE or_number = $1", re.sub(r"\s", "", or_number)
        )
        if found is not None:
            return "match", "or_number", [found]
    if client_id is not None and await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM clients WHERE id = $1)", client_id
    ):
        return "match", "client_id", [client_id]
    if by_phone:
        return "candidates", "phone", by_phone[:MAX_CANDIDATES]
    return "unknown", None, []


_CALL = """
SELECT id, call_ref, direction, phone, phone_raw, client_id, identified_by, identification,
       candidate_client_ids,
       agent_login, agent_user_id, extension, campaign, ringing_at, answered_at, hung_up_at,
       disposition, talk_time, recording_url, transcript
FROM calls
"""


async def get_call(conn: asyncpg.Connection, call_id: int) -> Call:
    row = await conn.fetchrow(_CALL + " WHERE id = $1", call_id)
    if row is None:
        raise NotFound(f"no call {call_id}")
    return Call(**dict(row))


def _event_time(body: CallEvent, received: dt.datetime) -> dt.datetime:
    """VICIdial's epoch when it is plausible (within a day of now), else the arrival time."""
    if body.epoch is not None:
        at = dt.datetime.fromtimestamp(body.epoch, dt.UTC)
        if abs((at - received).total_seconds()) < 86_400:
            return at
    return received


_UPSERT = """
INSERT INTO calls (call_ref, direction, phone, phone_raw, agent_login, agent_user_id, extension,
                   campaign, lead_id, ivr_or_number, ivr_client_id)
VALUES ($1, $2, $3, $4, $5, (SELECT id FROM users WHERE lower(login) = lower($5)), $6, $7, $8, $9, $10)
ON CONFLICT (call_ref) DO UPDATE SET
    agent_login = coalesce(calls.agent_login, EXCLUDED.agent_login),
    agent_user_id = coalesce(calls.agent_user_id, EXCLUDED.agent_user_id),
    extension = coalesce(calls.extension, EXCLUDED.extension),
    campaign = coalesce(calls.campaign, EXCLUDED.campaign),
    updated_at = herald_now()
RETURNING id, phone, agent_login, client_id
"""


async def _timeline_call(conn: asyncpg.Connection, call: Call) -> None:
    """Put the call (or its new state) on its client's timeline."""
    if call.client_id is None:
        return
    status = (
        "answered"
        if call.answered_at and not call.hung_up_at
        else "completed"
        if call.answered_at
        else "missed"
        if call.hung_up_at
        else "ringing"
    )
    await _timeline.record_event(
        conn,
        client_id=call.client_id,
        kind="call",
        at=call.ringing_at or call.answered_at or call.hung_up_at or now(),
        title=f"Вхідний дзвінок {call.phone or call.phone_raw}"
        if call.direction == "in"
        else f"Вихідний дзвінок {call.phone or call.phone_raw}",
        status=status,
        channel="call",
        direction=call.direction,
        ref_type="call",
        ref_id=str(call.id),
        detail={
            "recording_url": call.recording_url,
            "transcript": call.transcript,
            "disposition": call.disposition,
            "talk_time": call.talk_time,
            "agent": call.agent_login,
            "answered_at": call.answered_at and call.answered_at.isoformat(),
            "hung_up_at": call.hung_up_at and call.hung_up_at.isoformat(),
        },
    )


async def _case_of_call(
    conn: asyncpg.Connection, call: Call, or_number: str | None
) -> IntakeResult:
    """A finished or missed call becomes a case in the operators' queue (SR-01)."""
    started = call.ringing_at or call.answered_at or call.hung_up_at or now()
    return await from_call(
        conn,
        CallRecord(
            call_id=call.call_ref,
            caller=call.phone or call.phone_raw,
            outcome="answered" if call.answered_at else "missed",
            started_at=started,
            ended_at=call.hung_up_at,
            agent_login=call.agent_login,
            client_id=call.client_id,
            or_number=or_number,
            queue=call.campaign,
            notes=call.transcript or call.disposition,
        ),
    )


async def record_event(
    conn: asyncpg.Connection, body: CallEvent, *, received: dt.datetime
) -> tuple[Call, Event, bool, CallPush | None]:
    """Store one event (once per call and event); return the call, the event, whether it was
    new, and what to push to the agent (None for a repost).

    The identification runs on the first event Herald sees of a call (normally ringing).
    The push carries it on ringing, and on a later event when that event is the first to
    name the agent (a queue that rings before an agent is chosen).
    """
    event = event_name(body.event)
    call_ref = body.call_id or body.uniqueid
    if call_ref is None:
        raise InvalidInput("call_id", "give VICIdial's call_id or uniqueid")
    direction = _DIRECTIONS.get((body.direction or "in").strip().lower())
    if direction is None:
        raise InvalidInput("direction", "in or out")
    at = _event_time(body, received)
    async with conn.transaction():
        before = await conn.fetchrow(
            "SELECT agent_login, identification FROM calls WHERE call_ref = $1", call_ref
        )
        if before is None and not body.phone_number:
            raise InvalidInput("phone_number", "the caller's number is required for a new call")
        raw = body.phone_number or ""
        phone = normalise_phone(raw) if raw else None
        phone_ref = body.extension or body.phone_login
        agent = body.user or await cti_extensions.login_at(conn, phone_ref)
        row = await conn.fetchrow(
            _UPSERT,
            call_ref,
            direction,
            phone,
            raw,
            agent,
            phone_ref,
            body.campaign,
            body.lead_id,
            body.or_number,
            body.client_id,
        )
        call_id = row["id"]
        inserted = await conn.fetchval(
            "INSERT INTO call_events (call_id, event, at, payload) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT DO NOTHING RETURNING true",
            call_id,
            event,
            at,
            msgspec.to_builtins(body),
        )
        if not inserted:
            return await get_call(conn, call_id), event, False, None
        identified_now = before is None or before["identification"] is None
        if identified_now:
            kind, by, ids = await identify(
                conn, row["phone"], or_number=body.or_number, client_id=body.client_id
            )
            await conn.execute(
                "UPDATE calls SET client_id = $2, identified_by = $3, candidate_client_ids = $4, "
                "identification = $5 WHERE id = $1",
                call_id,
                ids[0] if kind == "match" else None,
                by,
                ids if kind == "candidates" else [],
                kind,
            )
        column = {"ringing": "ringing_at", "answered": "answered_at", "hung_up": "hung_up_at"}[
            event
        ]
        await conn.execute(
            f"UPDATE calls SET {column} = $2, disposition = coalesce($3, disposition), "
            "talk_time = coalesce($4, talk_time), recording_url = coalesce($5, recording_url), "
            "transcript = coalesce($6, transcript), updated_at = herald_now() WHERE id = $1",
            call_id,
            at,
            (body.dispo or body.status) if event == "hung_up" else None,
            body.talk_time,
            body.recording_url,
            body.transcript,
        )
        call = await get_call(conn, call_id)
        if event != "ringing":
            await _timeline_call(conn, call)
        case = None
        if event == "hung_up":
            case = await _case_of_call(conn, call, body.or_number)
        agent_now_known = (before is None or before["agent_login"] is None) and call.agent_login
        push = CallPush(
            event,
            call_id,
            call_ref,
            call.phone,
            received_at=received.timestamp(),
            case_id=case.case_id if case else None,
            case_number=case.number if case else None,
        )
        if event == "ringing" or identified_now or agent_now_known:
            ids = [call.client_id] if call.client_id is not None else call.candidate_client_ids
            summaries = await client_summaries(conn, ids)
            push = msgspec.structs.replace(
                push,
                identification=call.identification,
                identified_by=call.identified_by,
                client=summaries[0] if call.identification == "match" and summaries else None,
                candidates=summaries if call.identification == "candidates" else [],
            )
    return call, event, True, push


async def push_to_agent(
    redis: aioredis.Redis, namespace: str, agent_login: str, push: CallPush
) -> int:
    """THE push: publish the event on the operator's channel; returns how many streams got it.

    This is the end of the ringing -> workspace path that ``herald bench card`` measures
    (``CallPush.received_at`` is stamped when the event reached Herald).
    """
    return int(
        await redis.publish(agent_channel(namespace, agent_login), msgspec.json.encode(push))
    )


def now() -> dt.datetime:
    return clock.now()
