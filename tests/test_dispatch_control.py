"""Holding and releasing (quiet hours, air-raid alerts), pause/resume/stop, crashes and restarts."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
from zoneinfo import ZoneInfo

import msgspec
import pytest
import redis.asyncio as aioredis
from dispatch_helpers import Stack, counter, make_clients

from herald import clock
from herald.audit import SYSTEM
from herald.settings import Settings, env_name
from rules import air_raid, quiet_hours


def _completed(stats: dict) -> bool:
    return stats["status"] == "completed"


async def test_quiet_hours_hold_then_release(stack: Stack) -> None:
    # Given a quiet window around the present moment in Kyiv
    now = clock.now().astimezone(ZoneInfo("Europe/Kyiv"))
    window = await quiet_hours.create_window(
        stack.conn,
        SYSTEM,
        quiet_hours.WindowSpec(
            name="Ніч",
            start=(now - dt.timedelta(hours=1)).time().replace(microsecond=0),
            end=(now + dt.timedelta(hours=1)).time().replace(microsecond=0),
        ),
    )
    ids = await make_clients(stack.conn, 12)
    campaign = await stack.campaign(ids, chain=["sms"])
    # When the campaign runs, every message is held, none sent
    await stack.launch(campaign)
    stats = await stack.wait(lambda s: s["held_now"].get("quiet_hours") == 12, campaign)
    held_until = await stack.conn.fetchval(
        "SELECT min(release_at) FROM held_messages WHERE campaign_id = $1", campaign
    )
    assert held_until > clock.now() + dt.timedelta(minutes=50)
    assert (await stack.sim_stats("sms"))["accepted"] == 0
    assert stats["status"] == "running"
    # When the window ends (moved to now) the held messages go out, once each
    assert window.id is not None
    await quiet_hours.delete_window(stack.conn, SYSTEM, window.id)
    await stack.conn.execute(
        "UPDATE held_messages SET release_at = herald_now() WHERE campaign_id = $1", campaign
    )
    await stack.wait(_completed, campaign)
    sms = await stack.sim_stats("sms")
    assert (sms["accepted"], sms["duplicates"]) == (12, 0)


async def test_air_raid_alert_holds_until_lifted_and_urgent_goes_through(stack: Stack) -> None:
    redis = aioredis.Redis.from_url(stack.settings.redis_url)
    try:
        await _air_raid_scenario(stack, air_raid.AlertMirror(redis, stack.settings.namespace))
    finally:
        await redis.aclose()


async def _air_raid_scenario(stack: Stack, mirror: air_raid.AlertMirror) -> None:
    # Given an alert in Kyiv oblast (UA-32), where all the clients live
    await air_raid.set_alert(stack.conn, mirror, SYSTEM, "UA-32", True)
    ids = await make_clients(stack.conn, 10)
    campaign = await stack.campaign(ids, chain=["sms"])
    urgent = await stack.campaign(
        ids, chain=["viber"], template_id=await stack.template(urgent=True, name="Аварія")
    )
    await stack.launch(campaign)
    await stack.launch(urgent)
    # Then ordinary messages are held, the urgent ones are sent
    await stack.wait(lambda s: s["held_now"].get("air_raid") == 10, campaign)
    await stack.wait(_completed, urgent)
    assert (await stack.sim_stats("sms"))["accepted"] == 0
    assert (await stack.sim_stats("viber"))["accepted"] == 10
    # When the alert is lifted, the held messages are released and sent
    await air_raid.set_alert(stack.conn, mirror, SYSTEM, "UA-32", False)
    await stack.wait(_completed, campaign)
    sms = await stack.sim_stats("sms")
    assert (sms["accepted"], sms["duplicates"]) == (10, 0)


async def test_pause_stops_handing_over_and_resume_sends_the_rest_once(stack: Stack) -> None:
    # Given a campaign of 3,000 in batches of 100 that the SMS gateway answers slowly
    ids = await make_clients(stack.conn, 3000)
    await stack.configure("sms", latency_ms=400)
    campaign = await stack.campaign(ids, chain=["sms"])
    await stack.launch(campaign)
    await stack.wait(lambda s: counter(s, "sent") > 0, campaign)
    # When it is paused
    await stack.call("POST", f"/api/v1/campaigns/{campaign}/pause")
    await asyncio.sleep(1.0)  # requests already in flight may finish
    settled = (await stack.sim_stats("sms"))["accepted"]
    await asyncio.sleep(2.0)
    # Then nothing more reaches the provider
    assert (await stack.sim_stats("sms"))["accepted"] == settled < 3000
    assert (await stack.stats(campaign))["status"] == "paused"
    # When resumed, it completes and nobody gets a second message
    await stack.call("POST", f"/api/v1/campaigns/{campaign}/resume")
    await stack.wait(_completed, campaign, timeout=60)
    sms = await stack.sim_stats("sms")
    assert (sms["accepted"], sms["duplicates"]) == (3000, 0)


async def test_stop_is_final(stack: Stack) -> None:
    ids = await make_clients(stack.conn, 3000)
    await stack.configure("sms", latency_ms=400)
    campaign = await stack.campaign(ids, chain=["sms"])
    await stack.launch(campaign)
    await stack.wait(lambda s: counter(s, "sent") > 0, campaign)
    await stack.call("POST", f"/api/v1/campaigns/{campaign}/stop")
    await asyncio.sleep(1.0)
    settled = (await stack.sim_stats("sms"))["accepted"]
    await asyncio.sleep(2.0)
    assert (await stack.sim_stats("sms"))["accepted"] == settled < 3000
    # a stopped campaign cannot be resumed
    await stack.call("POST", f"/api/v1/campaigns/{campaign}/resume", expect=409)


def _environment(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    for field in msgspec.structs.fields(settings):
        env[env_name(field.name)] = str(getattr(settings, field.name))
    env["HERALD_WORKER_PROCESSES"] = "1"
    return env


def _start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    # The worker's log goes next to the test databases' names, for a post-mortem.
    with open(
        os.path.join(tempfile.gettempdir(), f"herald-worker-{settings.namespace}.log"), "ab"
    ) as log:
        return subprocess.Popen(
            [sys.executable, "-m", "herald", "worker"],
            env=_environment(settings),
            start_new_session=True,
            stdout=log,
            stderr=log,
        )


async def test_worker_killed_mid_campaign_loses_nothing(stack: Stack) -> None:
    # Given the worker runs as a process of its own and the campaign is under way
    await stack.stop_worker()
    ids = await make_clients(stack.conn, 4000)
    await stack.configure("sms", latency_ms=300)
    campaign = await stack.campaign(ids, chain=["sms"])
    await stack.launch(campaign)
    process = _start_worker(stack.settings)
    try:
        await stack.wait(lambda s: counter(s, "sent") >= 1000, campaign, timeout=60)
        # When it is killed with SIGKILL mid-campaign, and started again
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        process = _start_worker(stack.settings)
        # Then the campaign completes, every recipient got exactly one message
        await stack.wait(_completed, campaign, timeout=120)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
    sms = await stack.sim_stats("sms")
    assert sms["accepted"] == 4000
    # A batch accepted by the gateway but not yet recorded is handed over again under
    # the same message ids; the gateway's idempotency keeps it to one message each.
    assert sms["duplicates"] <= 1000
    delivered = await stack.conn.fetchval(
        "SELECT count(DISTINCT client_id) FROM message_events WHERE campaign_id = $1 "
        "AND status = 'sent'",
        campaign,
    )
    assert delivered == 4000


@pytest.mark.serial
@pytest.mark.timeout(300)
async def test_rabbitmq_restart_mid_campaign_loses_nothing(stack: Stack) -> None:
    ids = await make_clients(stack.conn, 3000)
    await stack.configure("sms", latency_ms=300)
    campaign = await stack.campaign(ids, chain=["sms"])
    await stack.launch(campaign)
    await stack.wait(lambda s: counter(s, "sent") > 0, campaign, timeout=60)
    # When the broker's application restarts (durable queues, persistent messages)
    for command in (["rabbitmqctl", "stop_app"], ["rabbitmqctl", "start_app"]):
        done = await asyncio.create_subprocess_exec(
            *command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        assert await done.wait() == 0
    # Then the workers reconnect and the campaign completes with one message each
    await stack.wait(_completed, campaign, timeout=240)
    sms = await stack.sim_stats("sms")
    assert sms["accepted"] == 3000
