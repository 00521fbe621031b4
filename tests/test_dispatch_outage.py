"""A provider outage on the last channel of a chain: the messages that met it are held and
sent again, not failed for good (found by ``herald drill sms-outage``: a 60 s SMS outage
failed every SMS fallback and trigger it met)."""

from __future__ import annotations

import asyncio

from dispatch_helpers import Stack, counter, make_clients


async def _held(stack: Stack, reason: str) -> int:
    return int(
        await stack.conn.fetchval("SELECT count(*) FROM held_messages WHERE reason = $1", reason)
    )


async def test_an_outage_on_the_last_channel_holds_and_sends_again(stack: Stack) -> None:
    # Given an SMS campaign, and an SMS provider down (503 to every request)
    ids = await make_clients(stack.conn, 5)
    campaign = await stack.campaign(ids, chain=["sms"])
    await stack.configure("sms", transient_rate=1.0)
    # When it is launched, Then the messages wait for the provider instead of failing
    await stack.launch(campaign)
    deadline = asyncio.get_running_loop().time() + 30
    while await _held(stack, "provider") < 5:
        assert asyncio.get_running_loop().time() < deadline, await stack.stats(campaign)
        await asyncio.sleep(0.1)
    stats = await stack.stats(campaign)
    assert stats["status"] == "running" and counter(stats, "failed:sms") == 0
    # And once the provider is back and their minute is up (brought forward here), they are
    # sent, once each
    await stack.configure("sms", transient_rate=0.0)
    await stack.conn.execute(
        "UPDATE held_messages SET release_at = herald_now() - interval '1 second' "
        "WHERE reason = 'provider'"
    )
    stats = await stack.wait(lambda s: s["status"] == "completed", campaign, timeout=30)
    sms = await stack.sim_stats("sms")
    assert (sms["accepted"], sms["duplicates"]) == (5, 0)
    assert counter(stats, "sent:sms") == 5 and counter(stats, "failed:sms") == 0
