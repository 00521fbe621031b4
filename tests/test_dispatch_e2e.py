"""Campaigns end to end: API -> scheduler -> RabbitMQ -> worker -> simulators -> receipts."""

from __future__ import annotations

import asyncio

from dispatch_helpers import Stack, counter, make_clients

from herald import clock
from herald.audit import SYSTEM
from rules import consent, stop_lists


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
    await consent.record_consent(
        stack.conn,
        SYSTEM,
        client_id=ids[0],
        channel="email",
        topic="debt",
        opted_in=False,
        source="cabinet",
    )
    await stop_lists.add_entry(
        stack.conn, SYSTEM, reason="court case", client_id=ids[1], topics=["debt"]
    )
    campaign = await stack.campaign([*ids, *no_email], chain=["email", "sms"])
    await stack.launch(campaign)
    stats = await stack.wait(_completed, campaign)
    # Then: the opted-out and the ones without e-mail got SMS, the stopped one nothing
    assert counter(stats, "skipped:reason:no_consent") == 1
    assert counter(stats, "skipped:reason:no_contact") == 2
    assert counter(stats, "skipped:reason:stop_list") == 1
    assert (await stack.sim_stats("email"))["accepted"] == 4
    assert (await stack.sim_stats("sms"))["accepted"] == 3


async def test_scheduled_launch_starts_on_time(stack: Stack) -> None:
    import datetime as dt

    ids = await make_clients(stack.conn, 5)
    campaign = await stack.campaign(ids, chain=["sms"])
    at = (clock.now() + dt.timedelta(seconds=3)).isoformat()
    launched = await stack.call("POST", f"/api/v1/campaigns/{campaign}/launch", {"at": at})
    assert launched["status"] == "scheduled"
    await asyncio.sleep(1.0)
    assert (await stack.stats(campaign))["status"] == "scheduled"
    await stack.wait(_completed, campaign)
    assert (await stack.sim_stats("sms"))["accepted"] == 5


async def test_bad_campaign_input_is_a_clear_4xx(stack: Stack) -> None:
    ids = await make_clients(stack.conn, 2)
    template = await stack.template()
    base = {
        "name": "x",
        "template_id": template,
        "audience": {"kind": "clients", "client_ids": ids},
    }

    async def problem(body: dict, expect: int = 400) -> dict:
        response = await stack.api.post("/api/v1/campaigns", json=body, headers=stack.headers)
        assert response.status == expect, await response.text()
        return await response.json()

    assert (await problem({**base, "channel_chain": ["sms", "sms"]}))["errors"][0][
        "field"
    ] == "channel_chain"
    assert (await problem({**base, "channel_chain": ["fax"]}))["errors"][0]["field"].startswith(
        "channel_chain"
    )
    assert (await problem({**base, "template_id": 999}))["errors"][0]["field"] == "template_id"
    assert (await problem({**base, "template_version": 7}))["errors"][0][
        "field"
    ] == "template_version"
    assert (await problem({**base, "audience": {"kind": "segment", "segment_id": 1}}))["errors"][0][
        "field"
    ] == "audience.segment_id"
    assert (await problem({**base, "audience": {"kind": "everyone"}}))["errors"][0][
        "field"
    ] == "audience.kind"
    assert (await problem({**base, "audience": {"kind": "all", "regions": ["Kyiv"]}}))["errors"][0][
        "field"
    ].startswith("audience.regions")
    sms_only = await stack.template(variants={"sms": {"text": "Борг {{ debt|money }}"}})
    body = {**base, "template_id": sms_only, "channel_chain": ["viber", "sms"]}
    assert "viber" in (await problem(body))["detail"]
    campaign = await stack.campaign(ids, chain=["sms"])
    await stack.launch(campaign)
    again = await stack.api.post(
        f"/api/v1/campaigns/{campaign}/launch", json={}, headers=stack.headers
    )
    assert again.status == 409
    edit = await stack.api.put(f"/api/v1/campaigns/{campaign}", json=base, headers=stack.headers)
    assert edit.status == 409
    naive = await stack.api.post(
        f"/api/v1/campaigns/{await stack.campaign(ids)}/launch",
        json={"at": "2030-01-01T09:00:00"},
        headers=stack.headers,
    )
    assert (await naive.json())["errors"][0]["field"] == "at"
    bad_template = dict(TEMPLATE_BAD)
    response = await stack.api.post("/api/v1/templates", json=bad_template, headers=stack.headers)
    assert response.status == 400
    assert (await response.json())["errors"][0]["field"] == "variants.sms.text"


TEMPLATE_BAD = {
    "name": "Зламаний",
    "topic": "debt",
    "variants": {"sms": {"text": "Вітаємо, {{ nickname }}!"}},
}
