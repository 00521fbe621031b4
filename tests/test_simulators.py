"""The provider simulators over HTTP and SMTP: config, stats, inspection, throttling, receipts."""

from __future__ import annotations

import asyncio

import aiosmtplib
import msgspec
import pytest
from aiohttp import ClientSession
from sim_helpers import FAST_RECEIPTS, TOKEN, Sim, sim, wait_until

from providers.base import ReceiptStatus
from providers.http_batch import WireMessage, batch_idempotency_key
from providers.sim.idset import IdSet, id_hash
from providers.sim.receipts import ReceiptQueue

__all__ = ["sim"]  # the fixture, imported for pytest


async def _post_batch(
    sim: Sim, channel: str, items: list[WireMessage], *, token: str = TOKEN, key: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": f"Bearer {token}"}
    if key:
        headers["Idempotency-Key"] = key
    async with (
        ClientSession() as session,
        session.post(
            sim.server.make_url(f"/{channel}/v1/messages"),
            data=msgspec.json.encode(items),
            headers=headers,
        ) as response,
    ):
        return response.status, dict(response.headers), await response.read()


def _items(prefix: str, n: int, to: str = "+380671234567") -> list[WireMessage]:
    return [WireMessage(f"{prefix}-{i}", to, "текст") for i in range(n)]


async def test_healthz_lists_the_simulators(sim: Sim) -> None:
    body = await sim.get("/healthz")
    assert {"sms", "viber", "email"} <= set(body["simulators"])


async def test_config_is_read_merged_and_validated(sim: Sim) -> None:
    config = await sim.get("/sms/sim/config")
    # Receipts go to Herald's callback path by default, with the provider token
    assert config["callback_url"].endswith("/api/v1/providers/sms/receipts")
    assert config["callback_token"] == TOKEN
    changed = await sim.configure("sms", latency_ms=5, permanent_rate=0.5)
    assert changed["latency_ms"] == 5 and changed["permanent_rate"] == 0.5
    assert changed["read_share"] == config["read_share"]
    async with ClientSession() as session:
        for bad in ({"permanent_rate": 2}, {"no_such_knob": 1}, {"permanent_pattern": "("}, [1]):
            async with session.put(sim.server.make_url("/sms/sim/config"), json=bad) as response:
                assert response.status == 400, bad
                assert (await response.json())["detail"]
    # A refused change leaves the config as it was
    assert (await sim.get("/sms/sim/config"))["permanent_rate"] == 0.5


async def test_stats_count_every_kind_of_outcome_and_reset_clears_them(sim: Sim) -> None:
    await sim.configure(
        "sms", permanent_pattern="-bad$", unknown_addresses=["+380990000000"], keep_messages=3
    )
    items = _items("s", 5) + [
        WireMessage("x-bad", "+380671234567", "t"),
        WireMessage("x-unknown", "+380990000000", "t"),
        WireMessage("x-invalid", "not-a-number", "t"),
    ]
    status, _, body = await _post_batch(sim, "sms", items)
    assert status == 200
    answer = msgspec.json.decode(body)["results"]
    assert [a["status"] for a in answer] == ["accepted"] * 5 + ["rejected"] * 3
    assert [a.get("error") for a in answer[5:]] == [
        "rejected",
        "no_such_subscriber",
        "invalid_number",
    ]
    await _post_batch(sim, "sms", _items("s", 2))
    stats = await sim.stats("sms")
    assert {
        k: stats[k] for k in ("requests", "messages", "accepted", "duplicates", "permanent")
    } == {"requests": 2, "messages": 10, "accepted": 5, "duplicates": 2, "permanent": 3}
    # Only the newest keep_messages are kept for inspection, but acceptance is known for all
    recent = await sim.get("/sms/sim/messages")
    assert [(m["message_id"], m["submissions"]) for m in recent["messages"]] == [
        ("x-invalid", 1),
        ("s-0", 2),
        ("s-1", 2),
    ]
    assert (await sim.get("/sms/sim/messages", message_id="s-0"))["accepted"] is True
    by_address = await sim.get("/sms/sim/messages", address="not-a-number")
    assert [m["error"] for m in by_address["messages"]] == ["invalid_number"]
    async with (
        ClientSession() as session,
        session.post(sim.server.make_url("/sms/sim/reset")) as response,
    ):
        assert response.status == 200
    stats = await sim.stats("sms")
    assert stats["messages"] == 0 and stats["accepted"] == 0
    assert (await sim.get("/sms/sim/config"))["permanent_pattern"] is None
    assert (await sim.get("/sms/sim/messages", message_id="s-0"))["accepted"] is False


async def test_batch_replays_and_auth_and_size_limits(sim: Sim) -> None:
    items = _items("r", 3)
    key = batch_idempotency_key([i.message_id for i in items])
    await _post_batch(sim, "viber", items, key=key)
    await _post_batch(sim, "viber", items, key=key)
    stats = await sim.stats("viber")
    assert stats["batch_replays"] == 1 and stats["duplicates"] == 3
    assert (await _post_batch(sim, "viber", items, token="wrong"))[0] == 401
    assert (await _post_batch(sim, "viber", _items("big", 1001)))[0] == 413
    async with (
        ClientSession() as session,
        session.post(
            sim.server.make_url("/viber/v1/messages"),
            data=b"{nope",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as response,
    ):
        assert response.status == 400


async def test_throttling_answers_429_with_fractional_retry_after(sim: Sim) -> None:
    await sim.configure("sms", max_per_second=1000)
    assert (await _post_batch(sim, "sms", _items("t1", 800)))[0] == 200
    status, headers, _ = await _post_batch(sim, "sms", _items("t2", 600))
    assert status == 429
    assert 0.3 <= float(headers["Retry-After"]) <= 0.41
    await asyncio.sleep(float(headers["Retry-After"]))
    assert (await _post_batch(sim, "sms", _items("t2", 600)))[0] == 200
    stats = await sim.stats("sms")
    assert stats["throttled"] == 600 and stats["accepted"] == 1400


async def test_random_rates_apply_to_roughly_their_share(sim: Sim) -> None:
    await sim.configure("sms", permanent_rate=0.2, transient_rate=0.0)
    _, _, body = await _post_batch(sim, "sms", _items("rate", 1000))
    rejected = sum(r["status"] == "rejected" for r in msgspec.json.decode(body)["results"])
    assert 120 < rejected < 280
    # The same ids are rejected again: a permanent failure stays permanent
    _, _, again = await _post_batch(sim, "sms", _items("rate", 1000))
    assert sum(r["status"] == "rejected" for r in msgspec.json.decode(again)["results"]) == rejected
    await sim.configure("sms", transient_rate=1.0)
    assert (await _post_batch(sim, "sms", _items("down", 10)))[0] == 503


async def test_receipts_are_batched_and_retried_while_herald_is_down(sim: Sim) -> None:
    # Given Herald refusing the first three receipt posts with 503
    sim.receiver.fail_next = 3
    await sim.configure("viber", receipt_batch_size=100, read_share=0.0, **FAST_RECEIPTS)
    # When 250 messages are accepted
    assert (await _post_batch(sim, "viber", _items("rc", 250)))[0] == 200
    # Then all 250 receipts arrive, in posts of at most 100, after retrying
    received = sim.receiver.receipts["viber"]
    await wait_until(lambda: len(received) == 250)
    assert {r.message_id for r in received} == {f"rc-{i}" for i in range(250)}
    assert all(r.status is ReceiptStatus.DELIVERED and r.provider_id for r in received)
    assert sim.receiver.posts >= 6
    stats = await sim.stats("viber")
    assert stats["receipts_sent"] == 250 and stats["receipt_posts_failed"] == 3
    assert stats["receipts_pending"] == 0


async def test_receipt_shares_failed_read_and_none(sim: Sim) -> None:
    await sim.configure("sms", no_receipt_pattern="^quiet-", **FAST_RECEIPTS, read_share=1.0)
    await _post_batch(sim, "sms", _items("quiet", 5) + _items("loud", 5))
    received = sim.receiver.receipts["sms"]
    await wait_until(lambda: len(received) == 10)
    await asyncio.sleep(0.05)
    assert {r.message_id for r in received} == {f"loud-{i}" for i in range(5)}
    await sim.configure("sms", failed_share=1.0, no_receipt_pattern=None)
    await _post_batch(sim, "sms", _items("fail", 3))
    await wait_until(lambda: len(received) == 13)
    assert {r.status for r in received[10:]} == {ReceiptStatus.FAILED}


async def test_receipts_wait_for_their_delay(sim: Sim) -> None:
    await sim.configure("sms", delivered_after_ms=300, read_share=0.0, receipt_window_ms=10)
    await _post_batch(sim, "sms", _items("later", 2))
    await asyncio.sleep(0.15)
    assert sim.receiver.receipts["sms"] == []
    assert (await sim.stats("sms"))["receipts_pending"] == 2
    await wait_until(lambda: len(sim.receiver.receipts["sms"]) == 2)


async def test_refused_receipts_are_dropped_not_retried_forever(sim: Sim) -> None:
    await sim.configure("sms", callback_token="wrong", read_share=0.0, **FAST_RECEIPTS)
    await _post_batch(sim, "sms", _items("drop", 4))
    await wait_until(lambda: sim.receiver.bad_auth == 1)
    ledger = sim.ledger("sms")
    await wait_until(lambda: ledger.stats.receipts_dropped == 4)


async def test_smtp_sink_counts_duplicates_and_answers_smtp_codes(sim: Sim) -> None:
    await sim.configure(
        "email",
        unknown_addresses=["nobody@example.com"],
        transient_pattern="^soft",
        **FAST_RECEIPTS,
        read_share=0.0,
    )
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=sim.smtp_port, start_tls=False)
    await smtp.connect()

    def message(mid: str) -> bytes:
        return (
            f"From: a@herald.local\r\nTo: b@example.com\r\nX-Herald-Message-Id: {mid}\r\n"
            "Subject: hi\r\n\r\nbody\r\n"
        ).encode()

    try:
        await smtp.sendmail("a@herald.local", ["b@example.com"], message("m-1"))
        await smtp.sendmail("a@herald.local", ["b@example.com"], message("m-1"))
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await smtp.sendmail("a@herald.local", ["nobody@example.com"], message("m-2"))
        assert refused.value.code == 550
        with pytest.raises(aiosmtplib.SMTPDataError) as later:
            await smtp.sendmail("a@herald.local", ["b@example.com"], message("soft-1"))
        assert later.value.code == 451
        await sim.configure("email", throttle_next_requests=1)
        with pytest.raises(aiosmtplib.SMTPDataError) as throttled:
            await smtp.sendmail("a@herald.local", ["b@example.com"], message("m-3"))
        assert throttled.value.code == 451 and "4.7.0" in throttled.value.message
    finally:
        await smtp.quit()
    stats = await sim.stats("email")
    assert {
        k: stats[k]
        for k in ("messages", "accepted", "duplicates", "permanent", "transient", "throttled")
    } == {
        "messages": 5,
        "accepted": 1,
        "duplicates": 1,
        "permanent": 1,
        "transient": 1,
        "throttled": 1,
    }
    await wait_until(lambda: len(sim.receiver.receipts["email"]) == 1)


def test_idset_tells_new_from_seen_across_growth() -> None:
    ids = IdSet()
    keys = [id_hash(f"c{i}:cmp:s1") for i in range(50_000)]
    assert all(ids.add(k) for k in keys)
    assert not any(ids.add(k) for k in keys)
    assert len(ids) == 50_000 and all(k in ids for k in keys)
    assert id_hash("never-added") not in ids
    assert ids.nbytes <= 4 * 1024 * 1024


def test_receipt_queue_takes_due_receipts_in_order_and_in_limits() -> None:
    queue = ReceiptQueue()
    queue.schedule(20.0, ReceiptStatus.READ, ["a", "b"])
    queue.schedule(10.0, ReceiptStatus.DELIVERED, ["a", "b", "c"])
    assert queue.take_due(5.0, 10, str.upper) == []
    first = queue.take_due(25.0, 2, str.upper)
    assert [(r.message_id, r.status, r.provider_id) for r in first] == [
        ("a", ReceiptStatus.DELIVERED, "A"),
        ("b", ReceiptStatus.DELIVERED, "B"),
    ]
    assert queue.pending == 5  # two in flight, three queued
    queue.done(first)
    assert queue.pending == 3
    rest = queue.take_due(25.0, 10, str.upper)
    assert [(r.message_id, r.status) for r in rest] == [
        ("c", ReceiptStatus.DELIVERED),
        ("a", ReceiptStatus.READ),
        ("b", ReceiptStatus.READ),
    ]
