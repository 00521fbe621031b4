"""The locust scenarios work against a real Herald: every user class of loadtest/locustfile.py
runs each of its tasks once (loadtest/once.py, a process of its own, as locust runs them)
against the app served on 127.0.0.1 with a small seeded database and the data file
``herald load`` writes. No request may fail. (The load itself is ``herald load``, a command.)"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import asyncpg
import pytest

from admin_api.app import init_app
from herald.cli.load import EVENT_TYPE, STAFF_PASSWORD, ensure_staff, prepare_fixture, write_sample
from herald.cli.seed import seed_crm
from herald.db import init_connection
from herald.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(300)


async def test_every_user_class_runs_each_task_without_a_failure(
    settings: Settings, aiohttp_server, tmp_path: Path
) -> None:
    await seed_crm(settings, clients=300, seed=5, processes=1, progress=False)
    fixture = await prepare_fixture(settings, "smoke")
    conn = await asyncpg.connect(settings.database_url)
    await init_connection(conn)
    try:
        staff = await ensure_staff(conn, settings, 6)
        sample = tmp_path / "sample.json"
        await write_sample(
            conn,
            sample,
            {
                "operator_template_id": fixture.operator_template_id,
                "campaign_template_id": fixture.campaign_template_id,
                "producer_key": fixture.producer_key,
                "event_type": EVENT_TYPE,
                "trigger_clients": fixture.trigger_clients,
                "campaign_id": None,
                "staff": staff,
                "staff_password": STAFF_PASSWORD,
            },
            count=100,
        )
    finally:
        await conn.close()
    server = await aiohttp_server(init_app(settings), host="127.0.0.1", shutdown_timeout=1.0)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loadtest.once",
        "--host",
        str(server.make_url("")).rstrip("/"),
        cwd=ROOT,
        env={**os.environ, "LOADTEST_SAMPLE": str(sample), "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 240)
    assert out, err.decode()[-3000:]
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["failures"] == [], (report["failures"], err.decode()[-3000:])
    classes = report["classes"]
    assert set(classes) == {
        "CcOperator",
        "VicidialStandIn",
        "WalkInOperator",
        "Supervisor",
        "Marketer",
        "EventProducer",
    }
    requests = {name for c in classes.values() for name in c["requests"]}
    assert {
        "GET /api/v1/clients/search?phone",
        "GET /api/v1/clients/search?name",
        "GET /api/v1/clients/search?address",
        "GET /api/v1/clients/{client_id}",
        "GET /api/v1/clients/{client_id}/timeline",
        "POST /api/v1/clients/{client_id}/messages",
        "POST /api/v1/cases/next",
        "POST /api/v1/cti/calls",
        "POST /api/v1/cases",
        "POST /api/v1/meters/{meter_id}/readings",
        "GET /api/v1/supervisor/stream",
        "GET /api/v1/supervisor/cases",
        "POST /api/v1/segments/preview",
        "POST /api/v1/campaigns",
        "POST /api/v1/campaigns/{campaign_id}/launch",
        "POST /api/v1/events",
    } <= requests, sorted(requests)
    assert process.returncode == 0
