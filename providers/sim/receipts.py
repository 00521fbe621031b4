"""Delivery and read receipts of a simulated provider: queued when due, posted back to Herald in batches.

Accepting messages only appends to a heap (one entry per request, not per message);
a background task posts the due receipts, a JSON list of ``providers.base.Receipt``,
to the callback URL with the bearer token, and keeps retrying with backoff while
Herald is down, so accepting never waits for Herald.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import aiohttp
import msgspec

from herald import clock
from providers.base import Receipt, ReceiptStatus

if TYPE_CHECKING:
    from providers.sim.ledger import Ledger

log = logging.getLogger(__name__)

_BACKOFF_MIN = 0.1
_BACKOFF_MAX = 5.0
_POST_TIMEOUT = aiohttp.ClientTimeout(total=10)
_encoder = msgspec.json.Encoder()


class _Due:
    """Receipts of one status for the ids one request accepted, all due at one time."""

    __slots__ = ("due", "seq", "status", "ids", "offset")

    def __init__(self, due: float, seq: int, status: ReceiptStatus, ids: list[str]) -> None:
        self.due, self.seq, self.status, self.ids = due, seq, status, ids
        self.offset = 0  # first id not yet taken

    def __lt__(self, other: _Due) -> bool:
        return (self.due, self.seq) < (other.due, other.seq)


class ReceiptQueue:
    """Receipts waiting for their time, ordered by it; then the batches being posted."""

    def __init__(self) -> None:
        self._heap: list[_Due] = []
        self._seq = itertools.count()
        self._queued = 0
        self._in_flight: dict[int, int] = {}  # id(batch) -> its length

    @property
    def pending(self) -> int:
        """Receipts not yet posted successfully."""
        return self._queued + sum(self._in_flight.values())

    def clear(self) -> None:
        self._heap.clear()
        self._queued = 0
        self._in_flight.clear()

    def schedule(self, due: float, status: ReceiptStatus, message_ids: list[str]) -> None:
        """Queue one receipt per id, all due at ``due`` (Unix seconds)."""
        heapq.heappush(self._heap, _Due(due, next(self._seq), status, message_ids))
        self._queued += len(message_ids)

    def take_due(self, now: float, limit: int, provider_id: Callable[[str], str]) -> list[Receipt]:
        """Up to ``limit`` receipts due by ``now``, in due order; pending until ``done``."""
        taken: list[Receipt] = []
        heap = self._heap
        while heap and heap[0].due <= now and len(taken) < limit:
            entry = heap[0]
            end = min(len(entry.ids), entry.offset + limit - len(taken))
            status, due = entry.status, entry.due
            taken.extend(
                Receipt(mid, status, due, provider_id(mid)) for mid in entry.ids[entry.offset : end]
            )
            if end == len(entry.ids):
                heapq.heappop(heap)
            else:
                entry.offset = end
        self._queued -= len(taken)
        if taken:
            self._in_flight[id(taken)] = len(taken)
        return taken

    def done(self, batch: list[Receipt]) -> None:
        """A batch from ``take_due`` is posted (or dropped) for good."""
        self._in_flight.pop(id(batch), None)


async def post_receipts_forever(ledger: Ledger, session: aiohttp.ClientSession) -> None:
    """Post the ledger's due receipts to its callback URL until cancelled.

    Up to ``receipt_concurrency`` posts are in flight, each retrying its own batch, so
    a slow callback (Herald writing to its database) does not cap the receipt rate.
    """
    queue = ledger.receipts
    health = _Health()
    posts: set[asyncio.Task[None]] = set()
    try:
        while True:
            config = ledger.config
            if len(posts) >= config.receipt_concurrency:
                await asyncio.wait(posts, return_when=asyncio.FIRST_COMPLETED)
                continue
            batch = queue.take_due(clock.time(), config.receipt_batch_size, ledger.provider_id)
            if batch:
                task = asyncio.create_task(_post_until_done(ledger, session, batch, health))
                posts.add(task)
                task.add_done_callback(posts.discard)
            if len(batch) < config.receipt_batch_size:
                # Nothing more due: let the next window's receipts gather into one post.
                await asyncio.sleep(config.receipt_window_ms / 1000)
    finally:
        for task in posts:
            task.cancel()
        await asyncio.gather(*posts, return_exceptions=True)


class _Health:
    """Whether posting fails now: to log when it starts and stops, not at every retry."""

    failing = False


async def _post_until_done(
    ledger: Ledger, session: aiohttp.ClientSession, batch: list[Receipt], health: _Health
) -> None:
    backoff = _BACKOFF_MIN
    body = _encoder.encode(batch)
    while True:
        config = ledger.config
        headers = {"Content-Type": "application/json"}
        if config.callback_token:
            headers["Authorization"] = f"Bearer {config.callback_token}"
        try:
            async with session.post(
                config.callback_url, data=body, headers=headers, timeout=_POST_TIMEOUT
            ) as response:
                status = response.status
                detail = (await response.read())[:200].decode(errors="replace")
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            status, detail = 0, f"{type(exc).__name__}: {exc}"
        if 200 <= status < 300 or (400 <= status < 500 and status not in (408, 429)):
            if status >= 400:
                # Herald refused these receipts for good; posting them again cannot help.
                ledger.stats.receipts_dropped += len(batch)
                log.warning(
                    "receipts refused by %s: HTTP %s %s", config.callback_url, status, detail
                )
            else:
                ledger.stats.receipts_sent += len(batch)
            ledger.receipts.done(batch)
            if health.failing:
                health.failing = False
                log.info("receipts to %s flow again", config.callback_url)
            return
        ledger.stats.receipt_posts_failed += 1
        if not health.failing:
            health.failing = True
            log.warning(
                "cannot post receipts to %s (%s %s); retrying with backoff",
                config.callback_url,
                status or "",
                detail,
            )
        await asyncio.sleep(backoff)
        backoff = min(_BACKOFF_MAX, backoff * 2)
