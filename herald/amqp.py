"""The RabbitMQ connection of a process, which may come up after the process does."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from herald.settings import Settings, redact_url

log = logging.getLogger("herald.amqp")


class AmqpLink:
    """Keeps trying to connect until it has a robust connection, then lets aio-pika reconnect.

    A process that needs RabbitMQ only for some of its work (the admin API) starts without
    it and reports it not ready; ``connection`` fails loudly until connected.

    ``on_connect`` (e.g. declaring the queues this process publishes to) runs on a channel
    of its own before the link counts as connected, and again after every reconnect: a
    publish to the default exchange for a queue nobody declared yet is silently dropped.
    """

    def __init__(
        self,
        settings: Settings,
        on_connect: Callable[[AbstractChannel], Awaitable[None]] | None = None,
    ) -> None:
        self._url = settings.amqp_url
        self._on_connect = on_connect
        self._connection: AbstractRobustConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._publisher: AbstractChannel | None = None

    @property
    def connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise ConnectionError(f"RabbitMQ at {redact_url(self._url)} is not connected yet")
        return self._connection

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    async def publisher(self) -> AbstractChannel:
        """A shared channel with publisher confirms, reopened if it was closed."""
        if self._publisher is None or self._publisher.is_closed:
            self._publisher = await self.connection.channel(publisher_confirms=True)
        return self._publisher

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect_forever(), name="amqp-connect")

    async def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the first connection; True when connected."""
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=timeout)
        return self.connected

    async def _connect_forever(self) -> None:
        delay = 0.5
        while True:
            connection = None
            try:
                connection = await aio_pika.connect_robust(self._url, timeout=5)
                await self._prepare(connection)
                connection.reconnect_callbacks.add(self._reconnected)
                self._connection = connection
                log.info("connected to RabbitMQ at %s", redact_url(self._url))
                return
            except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
                if connection is not None:
                    await connection.close()
                log.warning("RabbitMQ not reachable (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 15)

    async def _prepare(self, connection: AbstractRobustConnection) -> None:
        if self._on_connect is not None:
            async with connection.channel() as channel:
                await self._on_connect(channel)

    async def _reconnected(self, connection: AbstractRobustConnection | None) -> None:
        if connection is None:  # aio-pika's callback type allows it; a reconnect always has one
            return
        # A broker restarted without its durable state would have lost the queues.
        try:
            await self._prepare(connection)
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
            log.warning("could not prepare RabbitMQ after reconnecting: %s", exc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._connection is not None:
            await self._connection.close()
