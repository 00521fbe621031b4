"""The dispatch queues: their names, the shard of a client, their declaration, publishing.

Every part that puts work on a queue (the campaign planner, the realtime path, receipts
and holds) publishes through ``publish`` here; the worker and the API declare the queues
with ``declare_topology``. Bottom of ``dispatcher``: imports the kernel and
``dispatcher.envelopes`` only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aio_pika

from dispatcher.envelopes import Envelope, encoder
from herald.settings import Settings

_CONFIRM_WINDOW = 256


def shard_of(client_id: int, shards: int) -> int:
    """Multiplicative hash of the client id, modulo the shard count (ids below 2**32).

    Must equal the SQL function herald_shard()."""
    return ((client_id * 2654435761) % 4294967296) % shards


def queue_names(settings: Settings, shard: int) -> tuple[str, str]:
    """(realtime, bulk) queue names of a shard."""
    base = f"{settings.namespace}.dispatch.{shard}"
    return f"{base}.realtime", f"{base}.bulk"


def shards_of(settings: Settings, index: int, processes: int) -> list[int]:
    """The shards process ``index`` of ``processes`` consumes on this host."""
    return [s for s in range(settings.shards) if s % processes == index]


async def declare_topology(channel: aio_pika.abc.AbstractChannel, settings: Settings) -> None:
    """Durable queues of every shard, all dead-lettering into one parking queue."""
    dead = f"{settings.namespace}.dispatch.dead"
    await channel.declare_queue(dead, durable=True)
    for shard in range(settings.shards):
        for name in queue_names(settings, shard):
            await channel.declare_queue(
                name,
                durable=True,
                arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead},
            )


async def publish(
    channel: aio_pika.abc.AbstractChannel,
    settings: Settings,
    items: Sequence[tuple[int, Envelope]],
    *,
    realtime: bool = False,
) -> None:
    """Publish (shard, envelope) pairs persistently, awaiting broker confirms in windows."""
    exchange = channel.default_exchange
    for start in range(0, len(items), _CONFIRM_WINDOW):
        window = items[start : start + _CONFIRM_WINDOW]
        await asyncio.gather(
            *(
                exchange.publish(
                    aio_pika.Message(
                        encoder.encode(envelope),
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        content_type="application/json",
                    ),
                    # A campaign keeps the shard numbers of its snapshot; fold them
                    # onto the current shard count if it changed since.
                    routing_key=queue_names(settings, shard % settings.shards)[
                        0 if realtime else 1
                    ],
                )
                for shard, envelope in window
            )
        )
