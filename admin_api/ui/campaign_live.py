"""Campaign progress on the tab's one stream (``/ui/live``, event ``campaign``).

One watcher per process, however many tabs are open: twice a second it reads which
campaigns are under way (one query on the small ``campaigns`` table) and their live
counters (one Redis round trip for all of them: the counters the workers add to with
every batch, ``dispatcher.outcomes``), never the messages themselves. When anything
changed it hands the same JSON to every subscribed stream:
``{"t": <server time>, "c": {"<id>": {"status", "audience", "counters"}}}``.
The watcher runs only while some stream listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import msgspec
from aiohttp import web

from admin_api.typedefs import DB, REDIS, SETTINGS
from dispatcher import outcomes
from dispatcher.campaigns import store as campaigns
from herald import clock

log = logging.getLogger("herald.ui.campaigns")

# Finished campaigns stay in the feed this long, so their last figures reach the pages.
FINISHED_WITHIN = 120.0
# How often the figures are read: twice a second keeps the page within about a second of
# the database (the target is 2 s at p99) for a query and a Redis round trip each time.
INTERVAL = 0.5


class Snapshot(msgspec.Struct):
    status: str
    audience: int | None
    counters: dict[str, int]


_encode = msgspec.json.Encoder().encode


class Watch:
    """The process's campaign watcher and its subscribers (one queue per stream)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.queues: set[asyncio.Queue[str]] = set()
        self.task: asyncio.Task[None] | None = None
        self.last = ""  # the figures last sent
        self.data = ""  # ... with their time, as sent

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[str]]:
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=8)
        self.queues.add(queue)
        if self.data:
            queue.put_nowait(self.data)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run())
        try:
            yield queue
        finally:
            self.queues.discard(queue)

    async def read(self) -> str:
        """The figures of every watched campaign, as the pages receive them."""
        app = self.app
        async with app[DB].acquire() as conn:
            found = await campaigns.watched(conn, finished_within=FINISHED_WITHIN)
        stats = await outcomes.live_stats_many(app[REDIS], app[SETTINGS], [c.id for c in found])
        body = {
            str(c.id): Snapshot(
                c.status,
                c.audience_size,
                {k: int(v) for k, v in stats.get(c.id, {}).items() if k != "updated_at"},
            )
            for c in found
        }
        return _encode(body).decode()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while self.queues:
            try:
                body = await self.read()
            except Exception:  # a database or Redis hiccup skips one tick, never the watcher
                log.exception("campaign progress could not be read")
                body = ""
            if body and body != self.last:
                self.last = body
                self.data = data = f'{{"t":{clock.time():.3f},"c":{body}}}'
                for queue in list(self.queues):
                    if queue.full():  # a stalled tab: it skips to the newest figures
                        with contextlib.suppress(asyncio.QueueEmpty):
                            queue.get_nowait()
                    queue.put_nowait(data)
            # On a fixed beat (a slow read does not push every later one back).
            due = max(due + INTERVAL, loop.time())
            await asyncio.sleep(due - loop.time())

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


WATCH = web.AppKey("ui_campaign_watch", Watch)


async def close_watch(app: web.Application) -> None:
    await app[WATCH].close()


async def progress(request: web.Request, out: asyncio.Queue[tuple[str, str]]) -> None:
    """A source of ``/ui/live``: the watched campaigns' figures whenever they change."""
    async with request.app[WATCH].subscribe() as queue:
        while True:
            await out.put(("campaign", await queue.get()))
