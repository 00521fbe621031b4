"""Campaigns end to end: API -> scheduler -> RabbitMQ -> worker -> simulators -> receipts."""

from __future__ import annotations

from dispatch_helpers import Stack, counter, make_clients
from rules import consent, stop_lists
from crm.audit import SYSTEM


def _completed(stats: dict) -> bool:
    return stats["status"] == "completed"


async def test_every_recipient_gets_one_message(stack: Stack) -> None:
    # Given 60 clients with phones and a one-channel campaign
    ids = await make_clients(stack.conn, 60)
    campaign = await stack.campaign(ids, chain=["sms"])
    # When it is launched
    await stack.launch(campaign)
    stats = await stack.wait(_completed, campaign)
    # Then each got exactly one SMS, delivered, and nothing was handed over twice
    sms = await stack.sim_stats("sms")
    assert (sms["accepted"], sms["duplicates"]) == (60, 0)
    assert counter(stats, "sent:sms") == 60 and counter(stats, "delivered:sms") == 60
    assert stats["audience"] == 60
    history = await stack.call("GET", f"/api/v1/campaigns/{campaign}/recipients/{ids[0]}")
    assert [e["status"] for e in history["events"]] == ["sent", "delivered"]
    # and a client system reports who paid: counted once, strangers ignored
    body = {"client_ids": [ids[0], ids[1], ids[0], 999_999]}
    done = await stack.call("POST", f"/api/v1/campaigns/{campaign}/conversions", body)
    assert (done["recorded"], done["ignored"]) == (2, 1)
    again = await stack.call("POST", f"/api/v1/campaigns/{campaign}/conversions", body)
    assert again["recorded"] == 0
    assert counter(await stack.stats(campaign), "converted") == 2


async def test_not_on_viber_falls_back_to_sms(stack: Stack) -> None:
    ids = await make_clients(stack.conn, 20)
    # Given five clients who do not use Viber
    await stack.configure("viber", unknown_addresses=[f"+38050{i:07d}" for i in ids[:5]])
    campaign = await stack.campaign(ids, chain=["viber", "sms"])
    await stack.launch(campaign)
    stats = await stack.wait(_completed, campaign)
    # Then they got an SMS and everyone else a Viber message, once each
    viber, sms = await stack.sim_stats("viber"), await stack.sim_stats("sms")
    assert (viber["accepted"], sms["accepted"]) == (15, 5)
    assert viber["duplicates"] == sms["duplicates"] == 0
    assert counter(stats, "failed:viber") == 5 and counter(stats, "delivered:sms") == 5


async def test_no_receipt_in_time_falls_back(stack: Stack) -> None:
    ids = await make_clients(stack.conn, 10)
    # Given Viber never confirms delivery to two clients
    await stack.configure("viber", no_receipt_pattern=f"^c\\d+:({ids[0]}|{ids[1]}):")
    campaign = await stack.campaign(ids, chain=["viber", "sms"], receipt_timeout_seconds=2)
    await stack.launch(campaign)
    stats = await stack.wait(_completed, campaign, timeout=40)
    # Then after the step's timeout they were sent an SMS
    assert (await stack.sim_stats("sms"))["accepted"] == 2
    assert counter(stats, "failed:reason:receipt_timeout") == 2
    assert counter(stats, "delivered:viber") == 8


async def test_consent_stop_list_and_missing_contact(stack: Stack) -> None:
    ids = await make_clients(stack.conn, 6)
    no_email = await make_clients(stack.conn, 2, email=False, start=100)
    # Given one client opted out of e-mail about debt, one on a stop list for debt
    await consent.record_consent(stack.conn, SYSTEM, client_id=ids[0], channel="email",
                                 topic="debt", opted_in=False, source="cabinet")
    await stop_lists.add_entry(stack.conn, SYSTEM, reason="court case", client_id=ids[1],
                               topics=["debt"])
    campaign = await stack.campaign([*ids, *no_email], chain=["email", "sms"])
    await stack.launch(campaign)
    stats = await stack.wait(_completed, campaign)
    # Then: the opted-out and the ones without e-mail got SMS, the stopped one nothing
    assert counter(stats, "skipped:reason:no_consent") == 1
    assert counter(stats, "skipped:reason:no_contact") == 2
    assert counter(stats, "skipped:reason:stop_list") == 1
    assert (await stack.sim_stats("email"))["accepted"] == 4
    assert (await stack.sim_stats("sms"))["accepted"] == 3
