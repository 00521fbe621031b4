"""Change feed of cases and agents for live screens: PostgreSQL LISTEN, fanned out in-process.

Every INSERT/UPDATE of ``cases`` sends ``NOTIFY herald_case_changed, '<id>'`` (migration
0018) and every change of an agent's presence or profile ``herald_agent_changed``
(migration 0024), on commit only. One API process holds one listening connection and
hands the changed ids to every subscriber (an SSE stream) in batches: a subscriber
receives a :class:`Changes` at most every ``window`` seconds, however many rows changed.

A lost listening connection is reconnected; since notifications sent meanwhile are gone,
every subscriber then gets ``Changes(resync=True)`` and re-reads everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import msgspec

log = logging.getLogger("herald.cases.live")

CASE_CHANNEL = "herald_case_changed"
AGENT_CHANNEL = "herald_agent_changed"
RECONNECT_SECONDS = 1.0
KEEPALIVE_SECONDS = 5.0


class Changes(msgspec.Struct):
    """What changed since a subscriber's last batch."""

    case_ids: set[int] = msgspec.field(default_factory=set)
    agents: bool = False
    resync: bool = False

    def merge(self, other: Changes) -> None:
        self.case_ids |= other.case_ids
        self.agents = self.agents or other.agents
        self.resync = self.resync or other.resync


class Subscription:
    """One subscriber's pending changes; ``next()`` waits for the next batch."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._pending = Changes()
        self._ready = asyncio.Event()

    def add(self, changes: Changes) -> None:
        self._pending.merge(changes)
        self._ready.set()

    async def next(self, timeout: float | None = None) -> Changes | None:
        """The changes gathered over one window after the first one arrives, or None on timeout."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return None
        # Let a burst of commits land in one batch: one query per window, not per row.
        await asyncio.sleep(self.window)
        batch, self._pending = self._pending, Changes()
        self._ready.clear()
        return batch


class ChangeFeed:
    """The process's listening connection and its subscribers."""

    def __init__(
        self, connect: Callable[[], Awaitable[asyncpg.Connection]], window: float = 0.2
    ) -> None:
        self._connect = connect
        self.window = window
        self._subscribers: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        # When this process last heard of a change (monotonic): a read started after it
        # sees the change (the wallboard's shared snapshot uses it).
        self.changed_at = 0.0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="case-change-feed")
        # Start listening before the app serves, so the first stream misses nothing;
        # a database that is down does not block start-up (streams resync later).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), 5)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[Subscription]:
        sub = Subscription(self.window)
        self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)

    def _publish(self, changes: Changes) -> None:
        self.changed_at = time.monotonic()
        for sub in self._subscribers:
            sub.add(changes)

    def _on_case(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload.isdigit():
            self._publish(Changes(case_ids={int(payload)}))

    def _on_agent(self, _conn: object, _pid: int, _channel: str, _payload: str) -> None:
        self._publish(Changes(agents=True))

    async def _run(self) -> None:
        first = True
        while True:
            conn = None
            try:
                conn = await self._connect()
                await conn.add_listener(CASE_CHANNEL, self._on_case)
                await conn.add_listener(AGENT_CHANNEL, self._on_agent)
                if not first:
                    self._publish(Changes(resync=True, agents=True))
                first = False
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                self._listening.set()
                while not conn.is_closed():
                    try:
                        await asyncio.wait_for(lost.wait(), KEEPALIVE_SECONDS)
                    except TimeoutError:
                        # A round trip notices a connection the network dropped silently.
                        await conn.fetchval("SELECT 1")
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("case change feed lost its connection (%s); reconnecting", exc)
                first = False
            finally:
                self._listening.clear()
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2)
            await asyncio.sleep(RECONNECT_SECONDS)
