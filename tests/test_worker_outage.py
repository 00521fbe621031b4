"""A batch whose handling meets an unreachable service (Redis restarting, PostgreSQL out of
connections) is requeued however often, after a pause; it is not dead-lettered after two
quick tries as a broken message is (found by ``herald drill redis-restart``: a 2 s Redis
restart dead-lettered 20 campaign batches)."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from aiohttp import web
from redis import exceptions as redis_exceptions

from admin_api.problems import problem_middleware
from dispatcher import worker
from dispatcher.envelopes import CampaignBatch, encoder


class FakeMessage:
    def __init__(self, envelope: Any, redelivered: bool) -> None:
        self.body = encoder.encode(envelope)
        self.redelivered = redelivered
        self.routing_key = "t.dispatch.0.bulk"
        self.settled: list[str] = []

    async def ack(self) -> None:
        self.settled.append("ack")

    async def nack(self, requeue: bool = True) -> None:
        self.settled.append(f"nack requeue={requeue}")

    async def reject(self, requeue: bool = False) -> None:
        self.settled.append(f"reject requeue={requeue}")


@pytest.mark.parametrize(
    ("error", "settled"),
    [
        (redis_exceptions.ConnectionError("Connection closed by server."), "nack requeue=True"),
        (ConnectionRefusedError(111, "Connection refused"), "nack requeue=True"),
        (asyncpg.exceptions.TooManyConnectionsError("too many"), "nack requeue=True"),
        (RuntimeError("a bug in the batch"), "reject requeue=False"),
    ],
)
async def test_an_outage_requeues_a_redelivered_batch_a_broken_one_is_dead_lettered(
    monkeypatch: pytest.MonkeyPatch, error: Exception, settled: str
) -> None:
    async def failing(ctx: Any, envelope: Any) -> None:
        raise error

    monkeypatch.setattr(worker, "handle", failing)
    monkeypatch.setattr(worker, "OUTAGE_RETRY_SECONDS", 0.0)
    consumer = worker.Consumer(ctx=None)  # type: ignore[arg-type]  # handle is replaced
    message = FakeMessage(CampaignBatch(campaign_id=1, batch_id=2), redelivered=True)
    await consumer.on_message(message)  # type: ignore[arg-type]  # a stand-in message
    await consumer.drain()
    assert message.settled == [settled]


def test_a_cause_counts_too() -> None:
    try:
        try:
            raise OSError("network is unreachable")
        except OSError as inner:
            raise ValueError("wrapped") from inner
    except ValueError as outer:
        assert worker.infrastructure_failure(outer)
    assert not worker.infrastructure_failure(KeyError("x"))


async def test_the_api_answers_503_while_a_service_is_unreachable(aiohttp_client) -> None:
    async def receipts(request: web.Request) -> web.Response:
        raise redis_exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379")

    app = web.Application(middlewares=[problem_middleware])
    app.router.add_post("/receipts", receipts)
    client = await aiohttp_client(app)
    response = await client.post("/receipts")
    body = await response.json()
    assert (response.status, body["type"]) == (503, "/problems/service-unavailable")
    assert response.headers["Retry-After"] == "2"
