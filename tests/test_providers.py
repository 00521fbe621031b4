"""Channel adapters against their simulators on real loopback sockets, and the retry loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import aiosmtplib
import pytest
from sim_helpers import (
    FAST_RECEIPTS,
    TOKEN,
    Sim,
    free_port,
    mail,
    sim,
    sms,
    viber,
    wait_until,
)

from providers.base import (
    Channel,
    Outbound,
    Outcome,
    Provider,
    ProviderUnavailable,
    ReceiptStatus,
    SendResult,
)
from providers.registry import build_providers, close_providers, open_providers
from providers.retry import RetryPolicy, backoff, send_with_retry
from providers.sim.smtp_sink import start_smtp_sink
from providers.sms_http import SmsHttpProvider
from providers.smtp import SmtpProvider
from providers.viber_http import ViberHttpProvider

__all__ = ["sim"]  # the fixture, imported for pytest

FAST = RetryPolicy(min_backoff=0.01, max_backoff=0.05, max_elapsed=5.0)
BUILD = {"sms": sms, "viber": viber, "email": mail}


@contextlib.asynccontextmanager
async def provider_for(sim: Sim, channel: str, **options: Any) -> AsyncIterator[Provider]:
    """The registry's adapter for ``channel``, or one built with ``options``, closed afterwards."""
    if options:
        s = sim.settings
        provider: Provider
        if channel == "sms":
            provider = SmsHttpProvider(base_url=s.sms_gateway_url, token=TOKEN, **options)
        elif channel == "viber":
            provider = ViberHttpProvider(base_url=s.viber_api_url, token=TOKEN, **options)
        else:
            provider = SmtpProvider(
                host=s.smtp_host, port=s.smtp_port, sender=s.smtp_sender, **options
            )
        try:
            yield provider
        finally:
            await provider.aclose()
        return
    async with open_providers(sim.settings) as providers:
        yield providers[channel]


CHANNELS = ["sms", "viber", "email"]


@pytest.mark.parametrize("channel", CHANNELS)
async def test_accepts_a_batch_and_receipts_come_back(sim: Sim, channel: str) -> None:
    # Given a simulator whose every message is delivered and read at once
    await sim.configure(channel, read_share=1.0, **FAST_RECEIPTS)
    batch = [BUILD[channel](f"{channel}-ok-{i}") for i in range(30)]
    # When the adapter sends a batch
    async with provider_for(sim, channel) as provider:
        assert isinstance(provider, Provider)
        results = await provider.send(batch)
    # Then every message is accepted with a provider id, in order
    assert [r.message_id for r in results] == [m.message_id for m in batch]
    assert all(r.outcome is Outcome.ACCEPTED and r.provider_id for r in results)
    stats = await sim.stats(channel)
    assert stats["accepted"] == 30 and stats["duplicates"] == 0
    # And delivered and read receipts reach Herald's callback, with the provider ids
    received = sim.receiver.receipts[channel]
    await wait_until(lambda: len(received) == 60)
    ids = {r.message_id: r.provider_id for r in results}
    assert {(r.message_id, r.status) for r in received} == {
        (m.message_id, s) for m in batch for s in (ReceiptStatus.DELIVERED, ReceiptStatus.READ)
    }
    assert all(ids[r.message_id] == r.provider_id for r in received)
    assert sim.receiver.bad_auth == 0


@pytest.mark.parametrize("channel", CHANNELS)
async def test_permanent_rejection(sim: Sim, channel: str) -> None:
    # Given an address the provider does not know
    unknown = "gone@example.com" if channel == "email" else "+380990000000"
    await sim.configure(channel, unknown_addresses=[unknown])
    batch = [BUILD[channel](f"{channel}-p-1"), BUILD[channel](f"{channel}-p-2", to=unknown)]
    async with provider_for(sim, channel) as provider:
        results = await send_with_retry(provider, batch, FAST)
    # Then that message fails for good, at once, and the other goes through
    assert [r.outcome for r in results] == [Outcome.ACCEPTED, Outcome.PERMANENT]
    expected = {"sms": "no_such_subscriber", "viber": "not_viber_user", "email": "smtp_550"}
    assert results[1].error and results[1].error.startswith(expected[channel])
    stats = await sim.stats(channel)
    assert stats["permanent"] == 1 and stats["messages"] == 2


@pytest.mark.parametrize("channel", CHANNELS)
async def test_transient_failures_are_retried_until_accepted(sim: Sim, channel: str) -> None:
    # Given messages that fail transiently on their first two tries
    await sim.configure(channel, transient_pattern="-flaky-", transient_attempts=2)
    batch = [BUILD[channel](f"{channel}-flaky-{i}") for i in range(3)] + [
        BUILD[channel](f"{channel}-fine")
    ]
    async with provider_for(sim, channel) as provider:
        first = await provider.send(batch)
        assert [r.outcome for r in first] == [Outcome.TRANSIENT] * 3 + [Outcome.ACCEPTED]
        # When sent with retries
        results = await send_with_retry(provider, batch, FAST)
    # Then all are accepted, and each message was delivered once
    assert all(r.outcome is Outcome.ACCEPTED for r in results)
    stats = await sim.stats(channel)
    assert stats["accepted"] == 4 and stats["transient"] == 6 and stats["duplicates"] == 1


@pytest.mark.parametrize("channel", ["sms", "viber"])
async def test_server_error_fails_the_batch_transiently_then_retry_succeeds(
    sim: Sim, channel: str
) -> None:
    await sim.configure(channel, fail_next_requests=2, fail_status=502)
    batch = [BUILD[channel](f"{channel}-5xx-{i}") for i in range(5)]
    async with provider_for(sim, channel) as provider:
        first = await provider.send(batch)
        assert {(r.outcome, r.error) for r in first} == {(Outcome.TRANSIENT, "http_502")}
        results = await send_with_retry(provider, batch, FAST)
    assert all(r.outcome is Outcome.ACCEPTED for r in results)
    stats = await sim.stats(channel)
    assert stats["failed_requests"] == 2 and stats["accepted"] == 5


@pytest.mark.parametrize("channel", ["sms", "viber"])
async def test_throttling_honours_retry_after(sim: Sim, channel: str) -> None:
    # Given a provider answering the next request 429 with Retry-After 0.3 s
    await sim.configure(channel, throttle_next_requests=1, retry_after_s=0.3)
    batch = [BUILD[channel](f"{channel}-429-{i}") for i in range(10)]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(seconds)

    async with provider_for(sim, channel) as provider:
        first = await provider.send(batch)
        assert {(r.outcome, r.retry_after) for r in first} == {(Outcome.THROTTLED, 0.3)}
        await sim.configure(channel, throttle_next_requests=1)
        # When sent with retries
        results = await send_with_retry(provider, batch, FAST, sleep=sleep)
    # Then the retry waited at least Retry-After (above max_backoff) and succeeded
    assert all(r.outcome is Outcome.ACCEPTED for r in results)
    assert len(slept) == 1 and 0.3 <= slept[0] <= 0.3 + FAST.min_backoff
    stats = await sim.stats(channel)
    assert stats["throttled_requests"] == 2 and stats["throttled"] == 20


async def test_rate_limit_throttles_over_the_configured_rate(sim: Sim) -> None:
    # Given an SMS gateway taking 200 messages a second
    await sim.configure("sms", max_per_second=200)
    batch = [sms(f"rate-{i}") for i in range(250)]
    async with provider_for(sim, "sms") as provider:
        first = await provider.send(batch[:150])
        second = await provider.send(batch[150:])
        # Then the second batch within the same second is throttled until tokens suffice
        assert first[0].outcome is Outcome.ACCEPTED
        assert second[0].outcome is Outcome.THROTTLED and 0 < (second[0].retry_after or 0) <= 0.5
        results = await send_with_retry(provider, batch[150:], FAST)
    assert all(r.outcome is Outcome.ACCEPTED for r in results)


@pytest.mark.parametrize("channel", CHANNELS)
async def test_connection_refused_is_provider_unavailable(sim: Sim, channel: str) -> None:
    port = free_port()
    s = sim.settings
    makers: dict[str, Callable[[], Provider]] = {
        "sms": lambda: SmsHttpProvider(base_url=f"http://127.0.0.1:{port}/sms", token=TOKEN),
        "viber": lambda: ViberHttpProvider(base_url=f"http://127.0.0.1:{port}/viber", token=TOKEN),
        "email": lambda: SmtpProvider(host="127.0.0.1", port=port, sender=s.smtp_sender),
    }
    provider = makers[channel]()
    try:
        with pytest.raises(ProviderUnavailable):
            await provider.send([BUILD[channel](f"{channel}-down")])
        # And the retry loop gives up raising it too, since nothing ever reached the provider
        with pytest.raises(ProviderUnavailable):
            await send_with_retry(
                provider,
                [BUILD[channel](f"{channel}-down")],
                RetryPolicy(max_attempts=2, min_backoff=0.01),
            )
    finally:
        await provider.aclose()


async def test_wrong_token_is_provider_unavailable_not_permanent(sim: Sim) -> None:
    provider = SmsHttpProvider(base_url=sim.settings.sms_gateway_url, token="wrong")
    try:
        with pytest.raises(ProviderUnavailable, match="401"):
            await provider.send([sms("bad-token")])
    finally:
        await provider.aclose()


@pytest.mark.parametrize("channel", CHANNELS)
async def test_resend_is_counted_as_duplicate_and_delivered_once(sim: Sim, channel: str) -> None:
    await sim.configure(channel, **FAST_RECEIPTS)
    batch = [BUILD[channel](f"{channel}-dup-{i}") for i in range(4)]
    async with provider_for(sim, channel) as provider:
        first = await provider.send(batch)
        # When the same messages are sent again (a redelivered queue message)
        again = await provider.send(batch)
    # Then the provider answers accepted with the same ids, counts duplicates, delivers once
    assert [r.provider_id for r in first] == [r.provider_id for r in again]
    assert all(r.outcome is Outcome.ACCEPTED for r in again)
    stats = await sim.stats(channel)
    assert stats["accepted"] == 4 and stats["duplicates"] == 4
    found = await sim.get(f"/{channel}/sim/messages", message_id=f"{channel}-dup-0")
    assert found["accepted"] is True
    assert found["messages"][0]["submissions"] == 2
    delivered = sim.receiver.receipts[channel]
    await wait_until(lambda: len(delivered) >= 4)
    await asyncio.sleep(0.05)
    assert sorted(r.message_id for r in delivered if r.status is ReceiptStatus.DELIVERED) == sorted(
        m.message_id for m in batch
    )


@pytest.mark.parametrize("channel", ["sms", "viber"])
async def test_timeout_is_transient_and_the_resend_is_deduplicated(sim: Sim, channel: str) -> None:
    # Given a provider slower than the adapter's timeout: it takes the batch, the answer is lost
    await sim.configure(channel, latency_ms=600)
    batch = [BUILD[channel](f"{channel}-slow-{i}") for i in range(3)]
    async with provider_for(sim, channel, timeout=0.2) as provider:
        first = await provider.send(batch)
        assert {(r.outcome, r.error) for r in first} == {(Outcome.TRANSIENT, "timeout")}
        await sim.configure(channel, latency_ms=0)
        results = await send_with_retry(provider, batch, FAST)
    assert all(r.outcome is Outcome.ACCEPTED for r in results)
    stats = await sim.stats(channel)
    assert stats["accepted"] == 3 and stats["duplicates"] == 3


async def test_viber_carries_button_and_image(sim: Sim) -> None:
    async with provider_for(sim, "viber") as provider:
        await provider.send([viber("v-rich")])
    found = await sim.get("/viber/sim/messages", message_id="v-rich")
    content = found["messages"][0]["content"]
    assert content == {
        "message_id": "v-rich",
        "to": "+380501234567",
        "text": "Нагадування про оплату",
        "button_text": "Сплатити",
        "button_url": "https://pay.example/1",
        "image_url": "https://img.example/1.png",
    }


async def test_wrong_content_for_the_channel_is_permanent_for_that_message_only(sim: Sim) -> None:
    async with provider_for(sim, "sms") as provider:
        results = await provider.send([viber("wrong-kind"), sms("right-kind")])
    assert results[0].outcome is Outcome.PERMANENT and "unsupported_content" in (
        results[0].error or ""
    )
    assert results[1].outcome is Outcome.ACCEPTED


async def test_email_is_multipart_with_herald_headers(sim: Sim) -> None:
    async with provider_for(sim, "email") as provider:
        [result] = await provider.send([mail("cmp7:client42:s1", to="mykola@пошта.укр")])
    assert result.outcome is Outcome.ACCEPTED and result.provider_id
    found = await sim.get("/email/sim/messages", message_id="cmp7:client42:s1")
    content = found["messages"][0]["content"]
    assert content["subject"] == "Рахунок за газ: 1 234,56 грн до 20.05"
    assert content["content_type"] == "multipart/alternative"
    assert content["text"].strip() == "Шановна Олено, сплатіть рахунок."
    assert "<b>сплатіть</b>" in content["html"]
    assert content["x_herald_message_id"] == "cmp7:client42:s1"
    assert content["message_id_header"] == "<cmp7=3Aclient42=3As1@herald>"
    assert content["to"] == "mykola@" + "пошта.укр".encode("idna").decode()
    assert content["from"] == "Herald <no-reply@herald.local>"


async def test_email_pool_reconnects_after_the_server_drops_idle_connections(sim: Sim) -> None:
    # Given a sink that closes connections idle for 0.2 s
    sink = await start_smtp_sink(sim.ledger("email"), "127.0.0.1", 0, idle_timeout=0.2)
    provider = SmtpProvider(
        host="127.0.0.1",
        port=sink.sockets[0].getsockname()[1],
        sender=sim.settings.smtp_sender,
        pool_size=2,
    )
    try:
        assert (await provider.send([mail("idle-1"), mail("idle-2")]))[
            0
        ].outcome is Outcome.ACCEPTED
        # When the pooled connections have been dropped by the server
        await asyncio.sleep(0.5)
        results = await provider.send([mail("idle-3"), mail("idle-4"), mail("idle-5")])
    finally:
        await provider.aclose()
        sink.close()
        await sink.wait_closed()
    # Then the adapter reconnects and nothing is lost or sent twice
    assert all(r.outcome is Outcome.ACCEPTED for r in results)
    stats = await sim.stats("email")
    assert stats["accepted"] == 5 and stats["duplicates"] == 0


async def test_email_invalid_address_fails_without_reaching_the_server(sim: Sim) -> None:
    async with provider_for(sim, "email") as provider:
        results = await provider.send([mail("bad-addr", to="not an address")])
    assert results[0].outcome is Outcome.PERMANENT and results[0].error == "invalid_address"
    assert (await sim.stats("email"))["messages"] == 0


async def test_registry_builds_one_provider_per_channel(sim: Sim) -> None:
    providers = build_providers(sim.settings)
    try:
        assert {c: p.channel for c, p in providers.items()} == {c: c for c in CHANNELS}
        assert all(isinstance(p, Provider) and p.max_batch >= 1 for p in providers.values())
    finally:
        await close_providers(providers)
    with pytest.raises(ProviderUnavailable):
        await providers["sms"].send([sms("after-close")])


class _Scripted:
    """A fake provider answering from a script of outcomes per attempt."""

    name: str = "fake"
    channel: Channel = "sms"
    max_batch: int = 2

    def __init__(self, script: list[Outcome | ProviderUnavailable]) -> None:
        self.script = script
        self.calls: list[list[str]] = []

    async def send(self, batch: Sequence[Outbound]) -> list[SendResult]:
        self.calls.append([m.message_id for m in batch])
        step = self.script[min(len(self.calls), len(self.script)) - 1]
        if isinstance(step, ProviderUnavailable):
            raise step
        retry_after = 0.5 if step is Outcome.THROTTLED else None
        return [SendResult(m.message_id, step, retry_after=retry_after, error="e") for m in batch]

    async def aclose(self) -> None:
        pass


async def _no_sleep(seconds: float) -> None:
    pass


async def test_retry_gives_up_after_max_attempts_and_hands_back_transient() -> None:
    provider = _Scripted([Outcome.THROTTLED])
    results = await send_with_retry(
        provider, [sms("a"), sms("b"), sms("c")], RetryPolicy(max_attempts=3), sleep=_no_sleep
    )
    # Chunks follow max_batch; three attempts each
    assert provider.calls == [["a", "b"], ["c"]] * 3
    assert {(r.outcome, r.retry_after) for r in results} == {(Outcome.TRANSIENT, 0.5)}


async def test_retry_respects_the_time_budget_and_the_stop_check() -> None:
    provider = _Scripted([Outcome.TRANSIENT])
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    policy = RetryPolicy(max_attempts=100, min_backoff=1.0, max_backoff=4.0, max_elapsed=10.0)
    await send_with_retry(provider, [sms("a")], policy, sleep=sleep, clock=lambda: now[0])
    assert now[0] <= 10.0 and 3 <= len(provider.calls) <= 6
    provider = _Scripted([Outcome.TRANSIENT])
    await send_with_retry(provider, [sms("a")], policy, sleep=_no_sleep, should_stop=lambda: True)
    assert len(provider.calls) == 1


async def test_retry_does_not_retry_non_retryable_or_final_outcomes() -> None:
    provider = _Scripted([Outcome.TRANSIENT])
    results = await send_with_retry(
        provider, [sms("a")], RetryPolicy(non_retryable=frozenset({"e"})), sleep=_no_sleep
    )
    assert len(provider.calls) == 1 and results[0].outcome is Outcome.TRANSIENT
    provider = _Scripted([Outcome.PERMANENT])
    await send_with_retry(provider, [sms("a")], sleep=_no_sleep)
    assert len(provider.calls) == 1


async def test_retry_recovers_from_an_outage_and_keeps_it_apart_from_failures() -> None:
    provider = _Scripted([ProviderUnavailable("down"), Outcome.ACCEPTED])
    results = await send_with_retry(provider, [sms("a")], sleep=_no_sleep)
    assert results[0].outcome is Outcome.ACCEPTED
    provider = _Scripted([ProviderUnavailable("down")])
    with pytest.raises(ProviderUnavailable):
        await send_with_retry(
            provider, [sms("a")], RetryPolicy(retry_unavailable=False), sleep=_no_sleep
        )
    assert len(provider.calls) == 1


def test_backoff_is_capped_and_jittered() -> None:
    policy = RetryPolicy(min_backoff=0.1, max_backoff=1.0)
    assert backoff(1, policy, lambda: 0.0) == pytest.approx(0.05)
    assert backoff(1, policy, lambda: 1.0) == pytest.approx(0.1)
    assert backoff(4, policy, lambda: 1.0) == pytest.approx(0.8)
    assert backoff(30, policy, lambda: 1.0) == pytest.approx(1.0)


async def test_email_stale_pooled_connection_is_replaced_without_losing_the_message(
    sim: Sim,
) -> None:
    async with provider_for(sim, "email", pool_size=1) as provider:
        await provider.send([mail("stale-1")])
        [smtp] = [c for c in provider._idle._queue if c is not None]  # type: ignore[attr-defined]  # the pool's internals

        async def gone(*args: object, **kwargs: object) -> None:
            raise aiosmtplib.SMTPServerDisconnected("closed while idle")

        # Given a pooled connection the server closed without the client noticing
        smtp.mail = gone
        # When the next message goes out on it
        [result] = await provider.send([mail("stale-2")])
    # Then it is sent once on a fresh connection
    assert result.outcome is Outcome.ACCEPTED
    stats = await sim.stats("email")
    assert stats["accepted"] == 2 and stats["duplicates"] == 0


async def test_email_send_cancelled_midway_leaves_a_usable_pool(sim: Sim) -> None:
    await sim.configure("email", latency_ms=200)
    async with provider_for(sim, "email", pool_size=2) as provider:
        # When a send is cancelled while its transactions wait for the server (a pause)
        task = asyncio.create_task(provider.send([mail(f"cancel-{i}") for i in range(4)]))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await sim.configure("email", latency_ms=0)
        # Then the next send opens fresh connections and goes through
        results = await provider.send([mail("after-cancel-1"), mail("after-cancel-2")])
    assert all(r.outcome is Outcome.ACCEPTED for r in results)
