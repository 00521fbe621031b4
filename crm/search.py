"""Client search by phone, OR number, Client_ID, EIC, address and owner's name (issue 4, point 7).

Every criterion becomes a stream of client ids in ascending order read from an index,
so a page is "the next ``limit`` ids after the cursor" and never needs the full set:

* phone: ``contacts.phone_digits`` (E.164 without '+'). A full number is an equality; a
  number that starts like one (``+38067...``, ``38067...``, ``067...``) a prefix range on
  the same b-tree; any other digits (``1234567``) a suffix range on the
  ``reverse(phone_digits)`` index of migration 0012. Digits starting with 0 that are not
  a whole number (``0792424``: the client may be reading out the end of the number) are
  searched both ways, as a start and as the last digits. Only active contacts count.
* OR number: equality (10 digits) or a prefix range (3-9 digits); EIC: equality.
* name / address: every word of the normalised text (``herald_search_norm``: case,
  apostrophes ' ’ ʼ `, spacing) must start a word of ``clients.name_search`` /
  ``accounts.address_search`` ("шевч" finds Шевченко, "12" finds building 12, 12А and
  120, not 112; a word follows a space or a hyphen). Each word is one key of
  ``clients.search_keys`` (migration 0029: the word-start prefixes of the client's name
  and of all its accounts' addresses), so a name AND an address is one lookup in one
  GIN index; the rows found are then checked exactly (the whole word at a word start,
  the address words on one account; an abbreviation such as "вул." or "м." gives the
  key of its letters and must also occur as typed). Whether a stream walks the ids in order or collects its matches
  from the index and sorts them is decided on the ids after the cursor and the keys'
  frequencies, not left to the planner (``_stream``).
* ``match=all`` intersects the criteria (account criteria on the same account);
  ``match=any`` merges the per-criterion streams (the union of their first pages).

The count is exact up to ``COUNT_CAP`` matches (a capped count under a short time
budget); above that, or when the budget runs out, it is the planner's estimate and
``count_is_exact`` is false. A query matching millions therefore costs a first page
plus an EXPLAIN, never a full count.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg
import msgspec

from crm.search_words import (
    ADDRESS_TAG,
    NAME_TAG,
    query_keys,
    search_norm,
    starts_a_word,
    word_start_pattern,
)
from herald import cursors
from herald.bounds import Id
from herald.errors import InvalidInput
from herald.phones import normalise_phone

__all__ = ["search_norm", "starts_a_word", "word_start_pattern"]  # re-exported

MIN_PHONE_DIGITS = 4
MIN_WORD = 3
# Above this estimate the exact count is not even tried: the estimates of word searches
# are close enough (migration 0019) that a count would only run out its budget, and
# that budget is spent next to the page on a 2-core machine (name p95 461 -> 291 ms and
# address 531 -> 295 ms through the API when lowered from 5,000).
COUNT_TRY_BELOW = 2_000
COUNT_CAP = 1000
# A name or address stream collects its matches from the GIN index and sorts them, or
# walks the ids in order, whichever the keys' statistics make cheaper (see _stream).
# Measured at 13 M, both ways for 120 sampled queries: walking past an id costs ~0.4 µs,
# fetching a row the index found ~5 µs (the two meet near 4,500 matches of a name, at
# 20-25 ms a page).
WALK_US = 0.4
COLLECT_US = 5.0
# The walk covers this many times the ids a page needs at the density estimated, at
# least WALK_IDS; what it did not find there is collected from the index.
WALK_MARGIN = 4
WALK_IDS = 5_000
MAX_ID = 2**63 - 1
# The capped count may take this long before the planner's estimate is used instead.
COUNT_BUDGET_MS = 60

_PHONE_CHARS = re.compile(r"^[0-9+()\-.\s]+$")
_EIC = re.compile(r"^[0-9]{2}[A-Z][0-9A-Z-]{12}[0-9A-Z]$")

Match = Literal["all", "any"]


class AccountHit(msgspec.Struct):
    account_id: int
    or_number: str
    eic_code: str
    address: str
    status: str
    # True when this account satisfies the account criteria (or, eic, address) of the query.
    matched: bool


class ClientHit(msgspec.Struct):
    client_id: int
    full_name: str
    accounts: list[AccountHit]
    phones: list[str]


class SearchPage(msgspec.Struct):
    items: list[ClientHit]
    estimated_count: int
    # True: estimated_count is the exact number of matches; false: the planner's estimate.
    count_is_exact: bool
    next_cursor: str | None


def _words(raw: str, name: str) -> list[str]:
    norm = search_norm(raw)
    words = norm.split(" ") if norm else []
    if not any(len(w) >= MIN_WORD for w in words):
        raise InvalidInput(name, f"give at least one word of {MIN_WORD} or more letters")
    if len(words) > 8:
        raise InvalidInput(name, "at most 8 words")
    return words


def _digit_upper(prefix: str) -> str | None:
    """The smallest digit string above every string that starts with ``prefix``."""
    stripped = prefix.rstrip("9")
    if not stripped:
        return None
    return stripped[:-1] + str(int(stripped[-1]) + 1)


@dataclass(frozen=True)
class PhoneQuery:
    kind: Literal["exact", "prefix", "suffix"]
    digits: str  # for a suffix: the digits as typed (not reversed)
    # Digits read out from the end of a number may start with 0 ("0792424"): such a
    # prefix is searched as these last digits too.
    suffix: str | None = None


def parse_phone(raw: str, name: str = "phone") -> PhoneQuery:
    """How a typed phone is searched: a full number, the start of one, or its last digits."""
    text = raw.strip()
    if not text or not _PHONE_CHARS.match(text):
        raise InvalidInput(name, "digits, spaces, + ( ) - . only")
    digits = re.sub(r"\D", "", text)
    if len(digits) < MIN_PHONE_DIGITS:
        raise InvalidInput(name, f"give at least {MIN_PHONE_DIGITS} digits")
    if len(digits) > 15:
        raise InvalidInput(name, "a phone number has at most 15 digits")
    full = normalise_phone(text)
    if full is not None:
        return PhoneQuery("exact", full[1:])
    if text.startswith("+") or digits.startswith("380"):
        return PhoneQuery("prefix", digits)
    if digits.startswith("0"):
        return PhoneQuery("prefix", "38" + digits, suffix=digits)
    return PhoneQuery("suffix", digits)


class Criteria(msgspec.Struct, frozen=True):
    """Validated search criteria; build with ``parse_criteria``."""

    phone: PhoneQuery | None = None
    or_number: str | None = None
    client_id: int | None = None
    eic: str | None = None
    address: list[str] | None = None
    name: list[str] | None = None
    # Keys of these words on more than COMMON_KEY of all clients, with their share
    # (``with_key_shares``): the index would read most of its entries for them and
    # narrow little, so they are left to the exact checks.
    common: tuple[tuple[int, float], ...] = ()

    @property
    def account_level(self) -> bool:
        return self.or_number is not None or self.eic is not None or self.address is not None

    @property
    def words_only(self) -> bool:
        """Name and/or address words and nothing else."""
        return (
            (self.name is not None or self.address is not None)
            and self.phone is None
            and self.or_number is None
            and self.client_id is None
            and self.eic is None
        )

    def all_keys(self) -> list[int]:
        """The search keys (migration 0029) a matching client has: one per word part."""
        keys = {k for w in self.name or () for k in query_keys(w, NAME_TAG)}
        keys.update(k for w in self.address or () for k in query_keys(w, ADDRESS_TAG))
        return sorted(keys)

    def keys(self) -> list[int]:
        """The keys the GIN index is asked for: all but the common ones (the rarest of
        those if all are common)."""
        keys = self.all_keys()
        share = dict(self.common)
        rare = [k for k in keys if k not in share]
        return rare or sorted(keys, key=lambda k: share[k])[:1]

    def common_share(self) -> float:
        """The share of clients that have the keys ``keys`` leaves out (independently)."""
        left_out = set(self.all_keys()) - set(self.keys())
        return math.prod(f for k, f in self.common if k in left_out)

    def count(self) -> int:
        return sum(
            v is not None
            for v in (self.phone, self.or_number, self.client_id, self.eic, self.address, self.name)
        )


def parse_criteria(
    *,
    phone: str | None = None,
    or_number: str | None = None,
    client_id: int | None = None,
    eic: str | None = None,
    address: str | None = None,
    name: str | None = None,
) -> Criteria:
    """Validate what the operator typed; raise InvalidInput naming the parameter."""
    parsed: dict[str, Any] = {}  # Criteria's fields, each parsed above
    if phone is not None:
        parsed["phone"] = parse_phone(phone)
    if or_number is not None:
        value = re.sub(r"\s", "", or_number)
        if not re.fullmatch(r"[0-9]{3,10}", value):
            raise InvalidInput(
                "or", "an OR number is 10 digits; give all of them or the first 3 or more"
            )
        parsed["or_number"] = value
    if client_id is not None:
        parsed["client_id"] = client_id
    if eic is not None:
        value = re.sub(r"\s", "", eic).upper()
        if not _EIC.match(value):
            raise InvalidInput("eic", "an EIC code is 16 characters, e.g. 56XG00012345678K")
        parsed["eic"] = value
    if address is not None:
        parsed["address"] = _words(address, "address")
    if name is not None:
        parsed["name"] = _words(name, "name")
    criteria = Criteria(**parsed)
    if criteria.count() == 0:
        raise InvalidInput("query", "give at least one of phone, or, client_id, eic, address, name")
    return criteria


# A key on more than this share of clients is left to the exact checks (``Criteria.common``).
# Measured at 13 M: "вул. гет 63" asks the index for вул (89 % of clients), гет and 63;
# reading вул's entries took 40 of the 50 ms of the whole page.
COMMON_KEY = 0.1
_KEY_SHARES = """
SELECT u.k, u.f FROM pg_stats s,
     unnest(s.most_common_elems::text::int[], s.most_common_elem_freqs) AS u(k, f)
WHERE s.schemaname = current_schema() AND s.tablename = 'clients' AND s.attname = 'search_keys'
  AND u.k = ANY($1::int[]) AND u.f > $2
"""


async def with_key_shares(conn: asyncpg.Connection, c: Criteria) -> Criteria:
    """``c`` with its common keys marked, from the planner's element statistics."""
    keys = c.all_keys()
    if not keys:
        return c
    rows = await conn.fetch(_KEY_SHARES, keys, COMMON_KEY)
    return msgspec.structs.replace(c, common=tuple((r["k"], float(r["f"])) for r in rows))


def encode_cursor(last_id: int) -> str:
    return cursors.encode(last_id)


def decode_cursor(cursor: str) -> int:
    return cursors.decode(cursor, tuple[Id])[0]


@dataclass
class _Params:
    values: list[object] = field(default_factory=list)

    def add(self, value: object) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def _range(p: _Params, column: str, low: str) -> str:
    high = _digit_upper(low)
    cond = f"{column} >= {p.add(low)}"
    return cond + (f" AND {column} < {p.add(high)}" if high else "")


def _phone_cond(p: _Params, q: PhoneQuery, alias: str) -> str:
    if q.kind == "exact":
        return f"{alias}.phone_digits = {p.add(q.digits)}"
    if q.kind == "suffix":
        return _range(p, f"reverse({alias}.phone_digits)", q.digits[::-1])
    cond = _range(p, f"{alias}.phone_digits", q.digits)
    if q.suffix is None:
        return cond
    # Either reading: a BitmapOr of the two b-trees (migration 0012).
    return f"(({cond}) OR ({_range(p, f'reverse({alias}.phone_digits)', q.suffix[::-1])}))"


def _account_conds(p: _Params, c: Criteria, alias: str) -> list[str]:
    conds = []
    if c.or_number is not None:
        if len(c.or_number) == 10:
            conds.append(f"{alias}.or_number = {p.add(c.or_number)}")
        else:
            conds.append(f"{alias}.or_number >= {p.add(c.or_number)}")
            high = _digit_upper(c.or_number)
            if high:
                conds.append(f"{alias}.or_number < {p.add(high)}")
    if c.eic is not None:
        conds.append(f"{alias}.eic_code = {p.add(c.eic)}")
    if c.address is not None:
        conds += _text_conds(p, c.address, f"{alias}.address_search")
    return conds


def _text_conds(p: _Params, words: list[str], column: str) -> list[str]:
    """Every word must start a word of ``column`` (an abbreviation: occur in it).

    These check exactly the rows the search keys found (``_keys_cond``), so no index
    answers them: an abbreviation ("вул.", "м.") is a strpos, any other word a regular
    expression anchored at a word start.
    """
    conds = []
    for w in words:
        if w.endswith("."):
            conds.append(f"strpos({column}, {p.add(w)}) > 0")
        else:
            conds.append(f"{column} ~ {p.add(word_start_pattern(w))}")
    return conds


def _keys_cond(p: _Params, c: Criteria, alias: str) -> list[str]:
    """The keys for the GIN index, and the common ones as a check of the rows it finds
    (an expression the index does not take)."""
    keys = c.keys()
    if not keys:
        return []
    conds = [f"{alias}.search_keys @> {p.add(keys)}::int[]"]
    common = sorted(set(c.all_keys()) - set(keys))
    if common:
        conds.append(f"({alias}.search_keys || '{{}}'::int[]) @> {p.add(common)}::int[]")
    return conds


def _name_conds(p: _Params, c: Criteria, alias: str) -> list[str]:
    return _text_conds(p, c.name, f"{alias}.name_search") if c.name is not None else []


@dataclass(frozen=True)
class _Range:
    """Client ids above ``lower`` (a placeholder) and, if given, up to ``upper``."""

    lower: str
    upper: str | None = None

    def cond(self, column: str) -> str:
        return f"{column} > {self.lower}" + (f" AND {column} <= {self.upper}" if self.upper else "")


def _branch(p: _Params, c: Criteria, ids: _Range) -> str:
    """Matching client ids (unordered, maybe repeated) for criteria of one table or client_id."""
    if c.client_id is not None:
        return (
            f"SELECT c.id FROM clients c WHERE c.id = {p.add(c.client_id)} AND {ids.cond('c.id')}"
        )
    if c.phone is not None:
        return (
            f"SELECT k.client_id FROM contacts k WHERE {ids.cond('k.client_id')}"
            + " AND k.is_active AND "
            + _phone_cond(p, c.phone, "k")
        )
    return (
        f"SELECT a.client_id FROM accounts a WHERE {ids.cond('a.client_id')} AND "
        + " AND ".join(_account_conds(p, c, "a"))
    )


def _single(c: Criteria) -> list[Criteria]:
    """One criteria object per given criterion (the branches of match=any)."""
    out = []
    for name in ("client_id", "name", "phone", "or_number", "eic", "address"):
        value = getattr(c, name)
        if value is not None:
            out.append(Criteria(**{name: value}, common=c.common))
    return out


def _matches(p: _Params, c: Criteria, ids: _Range, *, accounts: bool = True) -> str:
    """Client ids matching every criterion of ``c`` (unordered, maybe repeated).

    ``accounts=False`` leaves out the check of the account criteria (the search keys
    still hold them for the client as a whole): ``_on_one_account`` makes it afterwards.
    """
    words = c.name is not None or c.address is not None
    tables = (c.client_id is not None, c.phone is not None, c.account_level)
    if not words and sum(tables) == 1 and c.client_id is None:
        return _branch(p, c, ids)
    conds = [ids.cond("c.id")] + _keys_cond(p, c, "c")
    if c.client_id is not None:
        conds.append(f"c.id = {p.add(c.client_id)}")
    conds += _name_conds(p, c, "c")
    if c.phone is not None:
        conds.append(
            "EXISTS (SELECT 1 FROM contacts k WHERE k.client_id = c.id AND k.is_active AND "
            + _phone_cond(p, c.phone, "k")
            + ")"
        )
    if c.account_level and accounts:
        conds.append(
            "EXISTS (SELECT 1 FROM accounts a WHERE a.client_id = c.id AND "
            + " AND ".join(_account_conds(p, c, "a"))
            + ")"
        )
    return "SELECT c.id FROM clients c WHERE " + " AND ".join(conds)


def _keys_only(p: _Params, c: Criteria, ids: _Range) -> str:
    """Clients with the (uncommon) search keys of ``c``'s words: what the index hands
    back, and what the planner estimates well."""
    return f"SELECT c.id FROM clients c WHERE {ids.cond('c.id')} AND c.search_keys @> {p.add(c.keys())}::int[]"


def _first(inner: str, limit: str, n: int) -> str:
    """The first ``limit`` distinct ids of ``inner``, ascending.

    Each search is planned for its own values (force_custom_plan). For phone, OR, EIC
    and Client_ID the planner's choice of plan is right; for words ``_stream`` makes it.
    """
    return f"SELECT DISTINCT id FROM ({inner}) m{n}(id) ORDER BY id LIMIT {limit}"


def parts(c: Criteria, match: Match) -> list[Criteria]:
    """The criteria read as one stream each: one for match=all, one per criterion for any."""
    return [c] if match == "all" or c.count() == 1 else _single(c)


def _ids_query(c: Criteria, match: Match, cursor: int, limit: int) -> tuple[str, list[object]]:
    p = _Params()
    cur, lim = p.add(cursor), p.add(limit)
    streams = [
        f"({_first(_matches(p, part, _Range(cur)), lim, i)})"
        for i, part in enumerate(parts(c, match))
    ]
    if len(streams) == 1:
        return streams[0][1:-1], p.values
    return f"SELECT id FROM ({' UNION '.join(streams)}) u(id) ORDER BY id LIMIT {lim}", p.values


_DETAILS = """
SELECT c.id, concat_ws(' ', c.last_name, c.first_name, c.middle_name) AS full_name,
       coalesce((SELECT array_agg(DISTINCT k.phone) FROM contacts k
                 WHERE k.client_id = c.id AND k.is_active AND k.phone IS NOT NULL), '{}') AS phones
FROM clients c WHERE c.id = ANY($1::bigint[])
"""
_ACCOUNTS = """
SELECT a.id, a.client_id, a.or_number, a.eic_code, a.status, a.address_search,
       concat_ws(', ', a.city, a.street, a.building, CASE WHEN a.flat IS NOT NULL THEN 'кв. ' || a.flat END) AS address
FROM accounts a WHERE a.client_id = ANY($1::bigint[]) ORDER BY a.client_id, a.id
"""


def _account_matches(c: Criteria, row: asyncpg.Record) -> bool:
    if not c.account_level:
        return False
    if c.or_number is not None and not row["or_number"].startswith(c.or_number):
        return False
    if c.eic is not None and row["eic_code"] != c.eic:
        return False
    text = row["address_search"]
    return all(w in text if w.endswith(".") else starts_a_word(w, text) for w in c.address or ())


async def _hits(conn: asyncpg.Connection, c: Criteria, ids: list[int]) -> list[ClientHit]:
    if not ids:
        return []
    clients = {r["id"]: r for r in await conn.fetch(_DETAILS, ids)}
    accounts: dict[int, list[AccountHit]] = {}
    for r in await conn.fetch(_ACCOUNTS, ids):
        accounts.setdefault(r["client_id"], []).append(
            AccountHit(
                r["id"],
                r["or_number"],
                r["eic_code"],
                r["address"],
                r["status"],
                _account_matches(c, r),
            )
        )
    return [
        ClientHit(i, clients[i]["full_name"], accounts.get(i, []), sorted(clients[i]["phones"]))
        for i in ids
        if i in clients
    ]


# Each search is planned for its own values (a generic plan cannot tell a rare surname
# from "Київ"); no JIT: compiling costs more than a first page of a search takes.
_LOCAL_SETTINGS = "SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL jit = off"
# Walk the ids in order: no bitmap of all matches, no sort of them, and no parallel
# workers (each would walk its share of the ids ahead of the page, to the end).
_WALK = (
    "SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off; "
    "SET LOCAL max_parallel_workers_per_gather = 0"
)
# Collect the matches from the GIN index and sort them.
_COLLECT = "SET LOCAL enable_indexscan = off"


@contextlib.contextmanager
def _timeouts_as_timeouts() -> Iterator[None]:
    """PostgreSQL reports a statement cancelled inside a regular expression match as an
    invalid regular expression ("operation cancelled"); it is a timeout like any other."""
    try:
        yield
    except asyncpg.InvalidRegularExpressionError as e:
        if "cancel" not in str(e):
            raise
        raise asyncpg.QueryCanceledError(str(e)) from e


async def _plan_rows(conn: asyncpg.Connection, sql: str, args: list[object]) -> int:
    plan = await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args)
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


async def estimate(conn: asyncpg.Connection, c: Criteria, match: Match) -> list[int]:
    """The planner's estimate of the matches of each stream (see ``parts``)."""
    out = []
    with _timeouts_as_timeouts():
        async with conn.transaction():
            await conn.execute(_LOCAL_SETTINGS)
            for part in parts(c, match):
                p = _Params()
                if part.words_only:
                    rows = await _plan_rows(conn, _keys_only(p, part, _Range(p.add(0))), p.values)
                    out.append(max(1, round(rows * part.common_share())))
                else:
                    out.append(
                        await _plan_rows(conn, _matches(p, part, _Range(p.add(0))), p.values)
                    )
    return out


async def count_matches(
    conn: asyncpg.Connection, c: Criteria, match: Match, estimates: list[int]
) -> tuple[int, bool]:
    """(count, exact): exact up to COUNT_CAP within COUNT_BUDGET_MS, else the planner's estimate."""
    guess = sum(estimates)
    if guess >= COUNT_TRY_BELOW:
        return guess, False
    sql, args = _ids_query(c, match, 0, COUNT_CAP + 1)
    try:
        with _timeouts_as_timeouts():
            async with conn.transaction():
                await conn.execute(
                    f"SET LOCAL statement_timeout = {COUNT_BUDGET_MS}; {_LOCAL_SETTINGS}"
                )
                n = await conn.fetchval(f"SELECT count(*) FROM ({sql}) m", *args)
    except asyncpg.QueryCanceledError:
        return guess, False
    if n <= COUNT_CAP:
        return n, True
    return max(guess, n), False


async def _fetch_ids(
    conn: asyncpg.Connection,
    settings: str,
    sql: str,
    args: list[object],
) -> list[int]:
    with _timeouts_as_timeouts():
        async with conn.transaction():
            await conn.execute(f"{_LOCAL_SETTINGS}; {settings}" if settings else _LOCAL_SETTINGS)
            return [r[0] for r in await conn.fetch(sql, *args)]


async def _stream(conn: asyncpg.Connection, part: Criteria, after: int, limit: int) -> list[int]:
    """The first ``limit`` matching ids above ``after`` of one stream, ascending.

    Address words are checked on the accounts of the candidates a page brings (one
    query for them all, ``_on_one_account``), not on the accounts of every match the
    index finds: the keys already hold the words for the client, and only a client
    whose words are on different accounts, or a word longer than the keys' 8 letters
    that goes on differently, fails that check. A page that loses candidates that way
    is topped up from after its last candidate, asking twice as many each time.
    """
    if not part.words_only or part.address is None:
        return await _candidates(conn, part, after, limit)
    found: list[int] = []
    rounds = 0
    while True:
        want = limit - len(found)
        ask = (want + want // 2 + 4) << rounds  # twice as many each time a page falls short
        rounds += 1
        candidates = await _candidates(conn, part, after, ask)
        held = await _on_one_account(conn, part, candidates)
        found += [i for i in candidates if i in held][:want]
        if len(found) >= limit or len(candidates) < ask:
            return found
        after = candidates[-1]


async def _on_one_account(conn: asyncpg.Connection, part: Criteria, ids: list[int]) -> set[int]:
    """Those of ``ids`` with one account that meets all account criteria of ``part``."""
    if not ids:
        return set()
    p = _Params()
    sql = (
        f"SELECT DISTINCT a.client_id FROM accounts a WHERE a.client_id = ANY({p.add(ids)}::bigint[]) AND "
        + " AND ".join(_account_conds(p, part, "a"))
    )
    return {r[0] for r in await conn.fetch(sql, *p.values)}


async def _candidates(
    conn: asyncpg.Connection, part: Criteria, after: int, limit: int
) -> list[int]:
    """The first ``limit`` ids above ``after`` of one stream, ascending, before the
    account check of its address words (see ``_stream``).

    A stream with a phone, OR number, EIC or Client_ID is planned by PostgreSQL: its
    b-tree conditions are selective and the planner estimates them well. A stream of
    name and address words alone can match millions of clients (the page fills after a
    few thousand ids in order) or a few hundred (the page needs the index and a sort of
    what it finds); the planner's statistics of the search keys (migration 0029) tell
    which. The index hands back the rows with the uncommon keys (``fetched``); the
    matches are those among them with the common keys too (``expected``). Collecting
    costs COLLECT_US per row fetched, walking WALK_US per id until a page of matches at
    that density; the cheaper is taken. A walk goes in id order, over WALK_MARGIN times the ids a page needs at
    that density; if the matches are not spread evenly and the page is not full there,
    the rest is collected from the index beyond.
    """
    if not part.words_only:
        p = _Params()
        lower, lim = p.add(after), p.add(limit)
        return await _fetch_ids(
            conn, "", _first(_matches(p, part, _Range(lower)), lim, 0), p.values
        )
    p = _Params()
    keys_after = _keys_only(p, part, _Range(p.add(after)))
    with _timeouts_as_timeouts():
        async with conn.transaction():
            await conn.execute(_LOCAL_SETTINGS)
            fetched = await _plan_rows(conn, keys_after, p.values)
            expected = fetched * part.common_share()
            clients_after = await _plan_rows(conn, "SELECT 1 FROM clients WHERE id > $1", [after])
    walk = WALK_US * limit * clients_after / max(expected, 1) < COLLECT_US * fetched
    found: list[int] = []
    edge = after
    if walk:
        span = max(WALK_IDS, int(WALK_MARGIN * limit * clients_after / max(expected, 1)))
        edge = min(after + span, MAX_ID)
        p = _Params()
        lower, lim, upper = p.add(after), p.add(limit), p.add(edge)
        found = await _fetch_ids(
            conn,
            _WALK,
            _first(_matches(p, part, _Range(lower, upper), accounts=False), lim, 0),
            p.values,
        )
        if len(found) >= limit or edge == MAX_ID:
            return found
    p = _Params()
    lower, lim = p.add(edge), p.add(limit - len(found))
    return found + await _fetch_ids(
        conn, _COLLECT, _first(_matches(p, part, _Range(lower), accounts=False), lim, 0), p.values
    )


async def search_page(
    conn: asyncpg.Connection, c: Criteria, match: Match, *, limit: int, after: int = 0
) -> tuple[list[ClientHit], str | None]:
    """One page of matching clients after the ``after`` id, and the next page's cursor.

    match=any reads the first page of each criterion and keeps the lowest ids of their
    union.
    """
    found: set[int] = set()
    for part in parts(c, match):
        found.update(await _stream(conn, part, after, limit + 1))
    ids = sorted(found)[: limit + 1]
    more = len(ids) > limit
    ids = ids[:limit]
    hits = await _hits(conn, c, ids)
    return hits, encode_cursor(ids[-1]) if more else None
