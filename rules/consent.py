"""Consent (IC-07): may this client receive this topic on this channel, and every change to it.

An explicit row in ``consents`` (opt-in or opt-out, per client, channel and topic) wins;
without one the topic's default applies: allowed unless ``message_topics.requires_opt_in``.
Consents are read when the batch is sent, not when the campaign is planned, so an
opt-out that arrives mid-campaign is honoured for every batch not yet sent.

Every change, whoever makes it (an operator, the cabinet, the app or the chatbot, an
unsubscribe link, an SMS STOP reply, an import), goes through one set-based statement
that upserts ``consents`` and appends, in the same statement, one ``consent_log`` row
(who, when, source, old and new state: what the client card shows) and one audit
journal entry per changed choice. Recording the state a client already has changes
nothing and logs nothing, so the row keeps the source and time of the real change.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal, get_args

import asyncpg
import msgspec

from herald import audit
from herald.errors import InvalidInput
from rules.decision import NO_CONSENT, Skip

Source = Literal[
    "cabinet", "app", "chatbot", "operator", "import", "sms_stop", "email_unsubscribe", "contract"
]
SOURCES: frozenset[str] = frozenset(get_args(Source))
# The channels a consent may be about (the consents.channel CHECK): a client may opt out
# of channels Herald does not send on itself yet (push, telegram, voice).
ConsentChannel = Literal["sms", "viber", "email", "push", "telegram", "voice"]
CONSENT_CHANNELS: frozenset[str] = frozenset(get_args(ConsentChannel))


class Consents(msgspec.Struct, frozen=True):
    """The explicit choices of a batch of clients for one topic, and the topic's default."""

    topic: str
    requires_opt_in: bool
    # (client_id, channel) -> opted_in, for explicit rows only.
    explicit: dict[tuple[int, str], bool]


_LOAD = """
SELECT t.requires_opt_in, c.client_id, c.channel, c.opted_in
FROM message_topics t
LEFT JOIN consents c
       ON c.topic = t.code AND c.client_id = ANY($1::bigint[]) AND c.channel = ANY($2::text[])
WHERE t.code = $3
"""


async def load_consents(
    conn: asyncpg.Connection, client_ids: Sequence[int], channels: Sequence[str], topic: str
) -> Consents:
    """The consents of ``client_ids`` on ``channels`` for ``topic``, in one query."""
    rows = await conn.fetch(_LOAD, list(client_ids), list(channels), topic)
    if not rows:
        raise InvalidInput("topic", f"unknown message topic {topic!r}")
    explicit = {
        (r["client_id"], r["channel"]): r["opted_in"] for r in rows if r["client_id"] is not None
    }
    return Consents(topic, rows[0]["requires_opt_in"], explicit)


def allowed(consents: Consents, client_id: int, channel: str) -> bool:
    """Whether the client may receive the topic on the channel."""
    choice = consents.explicit.get((client_id, channel))
    return (not consents.requires_opt_in) if choice is None else choice


def check(consents: Consents, client_ids: Iterable[int], channel: str) -> dict[int, Skip]:
    """The clients of the batch without consent on ``channel``: skipped with ``no_consent``."""
    if not consents.requires_opt_in and not consents.explicit:
        return {}
    return {c: NO_CONSENT for c in client_ids if not allowed(consents, c, channel)}


# --- recording changes ---------------------------------------------------------------

# ``{staged}`` is a relation of (client_id, channel, topic, opted_in), one row per key
# (the choices given as arrays also carry their order, ``ord``).
# All parts see the statement's snapshot, so ``old`` holds the state before the upsert.
# $1 source, $2 actor id, $3 actor login, $4 request id, $5 detail (jsonb).
_APPLY = """
WITH staged AS ({staged}),
old AS (
    SELECT c.client_id, c.channel, c.topic, c.opted_in
    FROM consents c JOIN staged s USING (client_id, channel, topic)
    FOR UPDATE OF c
),
written AS (
    INSERT INTO consents AS c (client_id, channel, topic, opted_in, source, changed_at)
    SELECT client_id, channel, topic, opted_in, $1, herald_now() FROM staged
    ON CONFLICT (client_id, channel, topic) DO UPDATE
        SET opted_in = EXCLUDED.opted_in, source = EXCLUDED.source, changed_at = EXCLUDED.changed_at
        WHERE c.opted_in IS DISTINCT FROM EXCLUDED.opted_in
    RETURNING c.client_id, c.channel, c.topic, c.opted_in
),
changed AS (
    SELECT w.client_id, w.channel, w.topic, o.opted_in AS old_opted_in, w.opted_in
    FROM written w LEFT JOIN old o USING (client_id, channel, topic)
),
logged AS (
    INSERT INTO consent_log (client_id, channel, topic, old_opted_in, new_opted_in, source,
                             actor_id, actor_login, request_id, detail)
    SELECT client_id, channel, topic, old_opted_in, opted_in, $1, $2, $3, $4, $5 FROM changed
),
journalled AS (
    INSERT INTO audit_log (actor_id, actor_login, request_id, action, entity_type, entity_id,
                           field, old_value, new_value)
    SELECT $2, $3, $4, CASE WHEN old_opted_in IS NULL THEN 'create' ELSE 'update' END, 'consent',
           client_id || ':' || channel || ':' || topic, 'opted_in', to_jsonb(old_opted_in),
           to_jsonb(opted_in)
    FROM changed
)
{result}
"""
_UNNEST = (
    "SELECT * FROM unnest($6::bigint[], $7::text[], $8::text[], $9::boolean[]) "
    "WITH ORDINALITY AS s(client_id, channel, topic, opted_in, ord)"
)
_PER_ROW = """
SELECT s.client_id, s.channel, s.topic, o.opted_in AS previous, c.client_id IS NOT NULL AS changed
FROM staged s
LEFT JOIN old o USING (client_id, channel, topic)
LEFT JOIN changed c USING (client_id, channel, topic)
ORDER BY s.ord
"""
_APPLY_ARRAYS = _APPLY.format(staged=_UNNEST, result=_PER_ROW)
_APPLY_IMPORT = _APPLY.format(
    staged="SELECT client_id, channel, topic, opted_in FROM consent_checked "
    "WHERE field IS NULL AND row_no = last_row",
    result="SELECT count(*) FROM changed",
)

_CONSTRAINT_FIELDS = {
    "consents_channel_check": ("channel", "unknown channel"),
    "consents_source_check": ("source", "unknown consent source"),
    "consents_client_id_fkey": ("client_id", "no such client"),
    "consents_topic_fkey": ("topic", "unknown message topic"),
}


class Choice(msgspec.Struct, frozen=True):
    """One client's choice for one topic on one channel."""

    client_id: int
    channel: str
    topic: str
    opted_in: bool


class Applied(msgspec.Struct, frozen=True):
    """A choice as recorded: the explicit state before it (None: the default applied)."""

    client_id: int
    channel: str
    topic: str
    opted_in: bool
    previous: bool | None
    changed: bool


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise InvalidInput(
            "source", f"unknown consent source {source!r}; one of {', '.join(sorted(SOURCES))}"
        )


def _log_args(actor: audit.Actor, source: str, detail: dict[str, Any] | None) -> tuple[Any, ...]:
    return source, actor.id, actor.login, actor.request_id, detail


async def apply_choices(
    conn: asyncpg.Connection,
    actor: audit.Actor,
    source: str,
    choices: Sequence[Choice],
    detail: dict[str, Any] | None = None,
) -> list[Applied]:
    """Record several choices in one statement (logged and journalled); the last of a key wins."""
    _check_source(source)
    unique = list({(c.client_id, c.channel, c.topic): c for c in choices}.values())
    try:
        rows = await conn.fetch(
            _APPLY_ARRAYS,
            *_log_args(actor, source, detail),
            [c.client_id for c in unique],
            [c.channel for c in unique],
            [c.topic for c in unique],
            [c.opted_in for c in unique],
        )
    except (asyncpg.CheckViolationError, asyncpg.ForeignKeyViolationError) as exc:
        field, message = _CONSTRAINT_FIELDS.get(exc.constraint_name or "", ("consent", str(exc)))
        raise InvalidInput(field, message) from None
    by_key = {(c.client_id, c.channel, c.topic): c.opted_in for c in unique}
    return [
        Applied(
            r["client_id"],
            r["channel"],
            r["topic"],
            by_key[(r["client_id"], r["channel"], r["topic"])],
            r["previous"],
            r["changed"],
        )
        for r in rows
    ]


async def record_consent(
    conn: asyncpg.Connection,
    actor: audit.Actor,
    *,
    client_id: int,
    channel: str,
    topic: str,
    opted_in: bool,
    source: str,
    detail: dict[str, Any] | None = None,
) -> bool | None:
    """Record a client's choice (logged and journalled in one statement); return the previous one."""
    [applied] = await apply_choices(
        conn, actor, source, [Choice(client_id, channel, topic, opted_in)], detail
    )
    return applied.previous


# --- the log the card shows ----------------------------------------------------------


class ConsentLogEntry(msgspec.Struct, frozen=True):
    """One change of a client's consent: who, when, from where, and the state before and after."""

    id: int
    at: dt.datetime
    channel: str
    topic: str
    old_opted_in: bool | None  # None: no explicit choice before, the topic default applied
    new_opted_in: bool
    source: str
    actor_id: int | None
    actor_login: str
    request_id: str | None
    detail: dict[str, Any] | None


async def history(
    conn: asyncpg.Connection, client_id: int, *, limit: int, before_id: int | None = None
) -> list[ConsentLogEntry]:
    """A client's consent changes, newest first; ``before_id`` is the keyset cursor."""
    rows = await conn.fetch(
        "SELECT id, at, channel, topic, old_opted_in, new_opted_in, source, actor_id, actor_login, "
        "request_id, detail FROM consent_log WHERE client_id = $1 AND ($2::bigint IS NULL OR id < $2) "
        "ORDER BY id DESC LIMIT $3",
        client_id,
        before_id,
        limit,
    )
    return [ConsentLogEntry(**dict(r)) for r in rows]


# --- unsubscribe links in e-mails ----------------------------------------------------


class UnsubscribeLinks:
    """Signs and reads the token of an e-mail's unsubscribe link: ``<client>.<topic>.<mac>``.

    The MAC is HMAC-SHA256 over the client and topic, cut to 128 bits; the token carries
    no expiry because a link in an old e-mail must keep working, and using it twice only
    confirms the same opt-out.
    """

    _TOKEN = re.compile(
        r"^(?P<client>[1-9][0-9]{0,18})\.(?P<topic>[a-z][a-z0-9_]{1,40})\."
        r"(?P<mac>[A-Za-z0-9_-]{22})$"
    )

    def __init__(self, key: bytes, base_url: str) -> None:
        if len(key) < 16:
            raise ValueError("an unsubscribe key needs at least 16 bytes")
        self._key = key
        self._base = base_url.rstrip("/")

    @classmethod
    def from_settings(cls, settings: Any) -> UnsubscribeLinks:
        """The links of ``herald.settings.Settings``: its secret, or in development a derived one."""
        secret = settings.unsubscribe_secret
        key = (
            secret.encode()
            if secret
            else hashlib.sha256(
                f"herald development unsubscribe|{settings.provider_api_token}|{settings.namespace}".encode()
            ).digest()
        )
        return cls(key, settings.public_base_url)

    def _mac(self, client_id: int, topic: str) -> str:
        digest = hmac.new(self._key, f"unsubscribe:{client_id}:{topic}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(digest.digest()[:16]).rstrip(b"=").decode()

    def token(self, client_id: int, topic: str) -> str:
        return f"{client_id}.{topic}.{self._mac(client_id, topic)}"

    def url(self, client_id: int, topic: str) -> str:
        """The link a recipient's e-mail carries (the template variable ``unsubscribe_url``)."""
        return f"{self._base}/u/{self.token(client_id, topic)}"

    def read(self, token: str) -> tuple[int, str] | None:
        """(client_id, topic) of a genuine token, else None (malformed or tampered)."""
        found = self._TOKEN.match(token)
        if found is None:
            return None
        client_id, topic = int(found["client"]), found["topic"]
        if not hmac.compare_digest(found["mac"], self._mac(client_id, topic)):
            return None
        return client_id, topic


# --- STOP replies to SMS -------------------------------------------------------------

# Whole-message keywords (punctuation, case and spaces ignored): the international ones
# and their Ukrainian and Russian forms. Cyrillic letters that look Latin are read as
# Latin, so "SТОР" typed with a Cyrillic Т, О and Р is still STOP.
STOP_WORDS = frozenset(
    {
        "stop",
        "stopall",
        "unsubscribe",
        "cancel",
        "end",
        "quit",
        "optout",
        "стоп",
        "відписатися",
        "відписатись",
        "відписка",
        "відмова",
        "отписаться",
        "отписка",
    }
)
_LOOKALIKES = str.maketrans("асеіјорхуктмнв", "aceijopxyktmhb")
_WORD = re.compile(r"[^\W\d_]+")


def is_stop(text: str) -> bool:
    """Whether an inbound SMS asks to stop: every word of it is a stop keyword ("STOP", "Стоп!")."""
    words = _WORD.findall(text.casefold())
    if not words or len(words) > 3:
        return False
    return all(w in STOP_WORDS or w.translate(_LOOKALIKES) in STOP_WORDS for w in words)


InboundAction = Literal["opted_out", "ignored", "unknown_number"]


class InboundResult(msgspec.Struct, frozen=True):
    """What an inbound SMS did: ``opted_out`` (a STOP from a known number), ``ignored`` (other
    text), ``unknown_number``; ``duplicate`` is true when the provider posted it before."""

    action: InboundAction
    clients: list[int]
    topics: list[str]
    duplicate: bool = False


async def inbound_sms(
    conn: asyncpg.Connection,
    actor: audit.Actor,
    *,
    phone: str,
    text: str,
    provider_message_id: str | None,
) -> InboundResult:
    """Log an inbound SMS; a STOP opts every client with an active contact on that number out of
    SMS for each topic marked ``stop_reply`` (all but service notices), source ``sms_stop``."""
    async with conn.transaction():
        stop = is_stop(text)
        clients = (
            [
                r[0]
                for r in await conn.fetch(
                    "SELECT DISTINCT client_id FROM contacts WHERE phone_digits = $1 AND is_active "
                    "ORDER BY client_id",
                    phone.removeprefix("+"),
                )
            ]
            if stop
            else []
        )
        topics = (
            [
                r[0]
                for r in await conn.fetch(
                    "SELECT code FROM message_topics WHERE stop_reply ORDER BY code"
                )
            ]
            if clients
            else []
        )
        action: InboundAction = (
            "ignored" if not stop else "opted_out" if clients else "unknown_number"
        )
        inserted = await conn.fetchval(
            "INSERT INTO sms_inbound (phone, text, provider_message_id, action, clients) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (provider_message_id) "
            "WHERE provider_message_id IS NOT NULL DO NOTHING RETURNING id",
            phone,
            text,
            provider_message_id,
            action,
            clients,
        )
        if inserted is None:
            before = await conn.fetchrow(
                "SELECT action, clients FROM sms_inbound WHERE provider_message_id = $1",
                provider_message_id,
            )
            return InboundResult(before["action"], list(before["clients"]), [], duplicate=True)
        if clients:
            await apply_choices(
                conn,
                actor,
                "sms_stop",
                [Choice(c, "sms", t, False) for c in clients for t in topics],
                {"phone": phone, "text": text[:160], "inbound_id": inserted},
            )
    return InboundResult(action, clients, topics)


# --- import: a file of choices, set-based --------------------------------------------

IMPORT_COLUMNS = ("client_id", "or_number", "channel", "topic", "opted_in")
_TRUE = frozenset({"true", "1", "yes", "y", "так", "t"})
_FALSE = frozenset({"false", "0", "no", "n", "ні", "f"})
_OR_NUMBER = re.compile(r"^[0-9]{10}$")
_CLIENT_ID = re.compile(r"^[1-9][0-9]{0,17}$")


class RowError(msgspec.Struct, frozen=True):
    """A row of an import that was not applied: its number in the file, the field, why."""

    row: int
    field: str
    detail: str


class StagedRow(msgspec.Struct, frozen=True, array_like=True):
    row: int
    client_id: int | None
    or_number: str | None
    channel: str
    topic: str
    opted_in: bool


class ImportReport(msgspec.Struct, frozen=True):
    """What an import did: rows read, choices changed, already so, rows refused (listed)."""

    rows: int
    applied: int
    unchanged: int
    failed: int
    errors: list[RowError]
    errors_truncated: bool
    dry_run: bool


def stage_row(row: int, values: dict[str, object]) -> StagedRow | RowError:
    """Check one row's own values (formats, channel, yes/no); existence is checked in SQL."""

    def text(name: str) -> str:
        value = values.get(name)
        return "" if value is None else str(value).strip()

    client_raw, or_number = text("client_id"), text("or_number")
    if not client_raw and not or_number:
        return RowError(row, "client_id", "give client_id or or_number")
    if client_raw and not _CLIENT_ID.match(client_raw):
        return RowError(row, "client_id", f"not a client id: {client_raw[:40]!r}")
    if or_number and not _OR_NUMBER.match(or_number):
        return RowError(row, "or_number", f"an OR number has 10 digits, got {or_number[:40]!r}")
    channel = text("channel").lower()
    if channel not in CONSENT_CHANNELS:
        return RowError(
            row,
            "channel",
            f"unknown channel {channel[:40]!r}; one of {', '.join(sorted(CONSENT_CHANNELS))}",
        )
    topic = text("topic")
    if not topic:
        return RowError(row, "topic", "missing")
    raw = values.get("opted_in")
    flag = raw if isinstance(raw, bool) else text("opted_in").lower()
    if flag not in _TRUE and flag not in _FALSE and not isinstance(flag, bool):
        return RowError(row, "opted_in", f"not yes/no: {str(raw)[:40]!r}")
    opted_in = flag if isinstance(flag, bool) else flag in _TRUE
    return StagedRow(
        row,
        int(client_raw) if client_raw else None,
        or_number or None,
        channel,
        topic[:64],
        opted_in,
    )


# Resolves OR numbers, refuses unknown clients and topics, and marks which row of a
# repeated (client, channel, topic) applies: the last one in the file.
_CHECK_IMPORT = """
CREATE TEMP TABLE consent_checked ON COMMIT DROP AS
WITH resolved AS (
    SELECT i.row_no, i.channel, i.topic, i.opted_in, coalesce(i.client_id, a.client_id) AS client_id,
           CASE
               WHEN i.or_number IS NOT NULL AND a.client_id IS NULL THEN 'or_number'
               WHEN i.client_id IS NOT NULL AND a.client_id IS NOT NULL
                    AND a.client_id <> i.client_id THEN 'or_number'
               WHEN i.client_id IS NOT NULL
                    AND NOT EXISTS (SELECT 1 FROM clients c WHERE c.id = i.client_id) THEN 'client_id'
               WHEN NOT EXISTS (SELECT 1 FROM message_topics t WHERE t.code = i.topic) THEN 'topic'
           END AS field,
           CASE
               WHEN i.or_number IS NOT NULL AND a.client_id IS NULL THEN 'no account has this OR number'
               WHEN i.client_id IS NOT NULL AND a.client_id IS NOT NULL AND a.client_id <> i.client_id
                    THEN 'the account belongs to client ' || a.client_id || ', not ' || i.client_id
               ELSE 'does not exist'
           END AS detail
    FROM consent_import i LEFT JOIN accounts a ON a.or_number = i.or_number
)
SELECT r.*, max(row_no) FILTER (WHERE field IS NULL)
                OVER (PARTITION BY client_id, channel, topic) AS last_row
FROM resolved r
"""
_IMPORT_ERRORS = """
SELECT row_no, coalesce(field, 'client_id') AS field,
       CASE WHEN field IS NULL THEN 'the same client, channel and topic again in row '
                                    || last_row || ', which applies'
            ELSE detail END AS detail
FROM consent_checked WHERE field IS NOT NULL OR row_no <> last_row
ORDER BY row_no LIMIT $1
"""
_WOULD_CHANGE = """
SELECT count(*) FROM consent_checked k
LEFT JOIN consents c USING (client_id, channel, topic)
WHERE k.field IS NULL AND k.row_no = k.last_row AND c.opted_in IS DISTINCT FROM k.opted_in
"""
MAX_LISTED_ERRORS = 10_000


async def import_choices(
    conn: asyncpg.Connection,
    actor: audit.Actor,
    *,
    source: str,
    rows: int,
    staged: Sequence[StagedRow],
    refused: Sequence[RowError],
    dry_run: bool = False,
) -> ImportReport:
    """Check and apply an import in one transaction: COPY, one check, one upsert + log + journal.

    ``rows`` is the number of data rows read; ``refused`` those that failed the per-row
    format check. Valid rows are applied even when others are refused (each refusal is
    listed with its row and field), unless ``dry_run``.
    """
    _check_source(source)
    async with conn.transaction():
        await conn.execute(
            "CREATE TEMP TABLE consent_import (row_no integer, client_id bigint, or_number text, "
            "channel text, topic text, opted_in boolean) ON COMMIT DROP"
        )
        await conn.copy_records_to_table(
            "consent_import",
            records=[msgspec.structs.astuple(r) for r in staged],
            columns=["row_no", "client_id", "or_number", "channel", "topic", "opted_in"],
        )
        await conn.execute(_CHECK_IMPORT)
        # Without statistics the planner takes the temporary table for one row and joins
        # the upsert's CTEs by nested loops: quadratic when a file changes existing rows.
        await conn.execute("ANALYZE consent_checked")
        found = [
            RowError(r["row_no"], r["field"], r["detail"])
            for r in await conn.fetch(_IMPORT_ERRORS, MAX_LISTED_ERRORS)
        ]
        bad = await conn.fetchval(
            "SELECT count(*) FROM consent_checked WHERE field IS NOT NULL OR row_no <> last_row"
        )
        valid = len(staged) - bad
        if dry_run:  # what the import would change
            applied = await conn.fetchval(_WOULD_CHANGE)
        else:
            applied = await conn.fetchval(_APPLY_IMPORT, *_log_args(actor, source, None))
    errors = sorted([*refused, *found], key=lambda e: e.row)
    return ImportReport(
        rows,
        applied,
        valid - applied,
        len(refused) + bad,
        errors[:MAX_LISTED_ERRORS],
        len(refused) + bad > MAX_LISTED_ERRORS,
        dry_run,
    )
