"""Exports with no row limit (issue 16, SR-13): each export compared row by row with the
list it exports (CSV and XLSX read back), the sheet split, the background job (progress,
owner-only download, expiry, the journal) and bad input."""

from __future__ import annotations

import csv
import datetime as dt
import io
import zipfile
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import openpyxl
import pytest
from conftest import login_as
from test_cases_support import bad, ok
from test_segment_compiler import load_population
from test_segments_api import DEBT_KYIV

from admin_api.exporting import RUNNER
from herald import clock, exports
from herald.cli import build_parser
from herald.cli.bench import exports as bench_exports
from herald.exports import ExportQuery

UTC = dt.UTC
# Text that breaks naive writers: a comma, quotes, a newline, Ukrainian letters, XML markup.
TRICKY = 'Лічильник, "газ" <б\'ється> & ґ\nдругий рядок'


@pytest.fixture
async def export_client(settings, aiohttp_client, demo_users, tmp_path: Path):
    from admin_api.app import init_app

    tuned = msgspec.structs.replace(
        settings, export_dir=str(tmp_path), export_background_rows=10, export_sheet_rows=4
    )
    return await aiohttp_client(init_app(tuned))


async def _case(conn: asyncpg.Connection, created: dt.datetime, **kw: Any) -> int:
    columns = {
        "channel": "call",
        "body": "Питання",
        "text_hash": b"\x00",
        "created_by_login": "test",
        "created_at": created,
        "status_changed_at": created,
        "last_inbound_at": created,
        "case_type": "technical",
        "status": "new",
        **kw,
    }
    marks = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    return await conn.fetchval(
        f"INSERT INTO cases ({', '.join(columns)}) VALUES ({marks}) RETURNING id", *columns.values()
    )


async def _seed_cases(conn: asyncpg.Connection, n: int) -> None:
    start = clock.now() - dt.timedelta(days=3)
    for i in range(n):
        await _case(
            conn,
            start + dt.timedelta(minutes=7 * i),
            channel="viber" if i % 3 else "call",
            subject=f"{TRICKY} №{i}" if i % 2 else None,
        )


def _csv_rows(body: bytes) -> list[list[str]]:
    assert body.startswith(exports.BOM), "Excel needs the BOM to read UTF-8"
    return list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline="")))


def _xlsx_sheets(body: bytes) -> list[tuple[str, list[list[str]]]]:
    book = openpyxl.load_workbook(io.BytesIO(body), read_only=True)
    sheets = []
    for sheet in book.worksheets:
        rows = [
            ["" if v is None else str(v) for v in row] for row in sheet.iter_rows(values_only=True)
        ]
        sheets.append((sheet.title, rows))
    book.close()
    return sheets


def _xlsx_rows(body: bytes) -> list[list[str]]:
    """All sheets' rows, the header once (it repeats on each sheet)."""
    sheets = _xlsx_sheets(body)
    header = sheets[0][1][0]
    rows = [header]
    for _, sheet_rows in sheets:
        assert sheet_rows[0] == header
        rows += sheet_rows[1:]
    return rows


def _local(value: str | None) -> str:
    if value is None:
        return ""
    at = dt.datetime.fromisoformat(value).astimezone(clock.business_tz())
    return at.strftime("%Y-%m-%d %H:%M:%S")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value)


async def _export(client, headers, kind: str, fmt: str, **filters: Any) -> bytes:
    response = await client.post(
        "/api/v1/exports",
        json={"kind": kind, "format": fmt, "filters": filters, "background": False},
        headers=headers,
    )
    assert response.status == 200, await response.text()
    return await response.read()


async def test_cases_export_equals_the_case_list_in_csv_and_xlsx(
    export_client, admin_conn: asyncpg.Connection
) -> None:
    # Given 9 cases, 6 of them by Viber, some with a subject no naive writer survives
    await _seed_cases(admin_conn, 9)
    headers = await login_as(export_client, "operator_cc")
    filters = {"channel": "viber", "order": "desc"}
    listed = await ok(
        await export_client.get("/api/v1/cases", params={**filters, "limit": 200}, headers=headers)
    )
    expected = [
        [
            _cell(item[c]) if c not in ("created_at", "status_changed_at") else _local(item[c])
            for c in (
                "id",
                "number",
                "channel",
                "status",
                "priority",
                "case_type",
                "category_id",
                "client_id",
                "subject",
                "is_repeat",
                "duplicate_of_id",
                "merged_into_id",
                "assignee_id",
                "created_at",
                "status_changed_at",
            )
        ]
        for item in listed["items"]
    ]
    assert len(expected) == 6

    # When the same filters are exported as CSV and as XLSX (a sheet holds 3 rows here)
    csv_rows = _csv_rows(await _export(export_client, headers, "cases", "csv", **filters))
    xlsx = await _export(export_client, headers, "cases", "xlsx", **filters)

    # Then both hold the list's rows in its order, field for field
    assert csv_rows[0][:3] == ["id", "number", "channel"]
    assert [r[:15] for r in csv_rows[1:]] == expected
    assert TRICKY in "".join(r[8] for r in csv_rows[1:])
    # And the list itself answers ?format=csv with the same file
    direct = await export_client.get(
        "/api/v1/cases", params={**filters, "format": "csv"}, headers=headers
    )
    assert direct.status == 200 and _csv_rows(await direct.read()) == csv_rows
    sheets = _xlsx_sheets(xlsx)
    assert [name for name, _ in sheets] == ["cases", "cases (2)"]
    assert [len(rows) for _, rows in sheets] == [4, 4]  # header + 3, header + 3
    xlsx_rows = _xlsx_rows(xlsx)
    assert xlsx_rows == csv_rows
    # Numbers are numbers in the sheet, not text
    book = openpyxl.load_workbook(io.BytesIO(xlsx), read_only=True)
    first = next(book.worksheets[0].iter_rows(min_row=2, max_row=2, values_only=True))
    assert isinstance(first[0], int) and first[0] == listed["items"][0]["id"]
    book.close()


async def test_the_sheet_split_keeps_every_row(app_conn: asyncpg.Connection, tmp_path) -> None:
    # Given a query of 10 rows and sheets of 4 rows (the header and 3)
    query = ExportQuery(
        "SELECT g AS n, 'рядок ' || g AS text, CASE WHEN g = 5 THEN E'a\\x01b' END AS odd "
        "FROM generate_series(1, 10) g ORDER BY g",
        (),
        ("n", "text", "odd"),
        title="numbers: [all]",
    )
    path = tmp_path / "split.xlsx"
    seen: list[int] = []

    async def progress(rows: int) -> None:
        seen.append(rows)

    # When it is written
    async with app_conn.transaction():
        rows = await exports.write_xlsx(
            app_conn, query, path, max_rows=4, progress=progress, progress_every=1
        )

    # Then 4 sheets hold all 10 rows in order, each with the header, nothing cut
    assert rows == 10 and seen[-1] == 10
    sheets = _xlsx_sheets(path.read_bytes())
    assert [name for name, _ in sheets] == [
        "numbers   all",
        "numbers   all (2)",
        "numbers   all (3)",
        "numbers   all (4)",
    ]
    assert [len(r) - 1 for _, r in sheets] == [3, 3, 3, 1]
    numbers = [int(r[0]) for _, sheet in sheets for r in sheet[1:]]
    assert numbers == list(range(1, 11))
    # A control character XML cannot hold is dropped (the CSV keeps it)
    assert sheets[1][1][2][2] == "ab"
    with zipfile.ZipFile(path) as z:
        assert "xl/worksheets/sheet4.xml" in z.namelist()

    # And an empty export is a valid workbook with its header
    empty = tmp_path / "empty.xlsx"
    async with app_conn.transaction():
        none = ExportQuery("SELECT 1 AS n WHERE false", (), ("n",))
        assert await exports.write_xlsx(app_conn, none, empty) == 0
    assert _xlsx_sheets(empty.read_bytes()) == [("export", [["n"]])]


async def test_a_large_export_runs_as_a_job_only_its_owner_downloads(
    export_client, admin_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    # Given 12 cases, over the background threshold of 10 rows
    await _seed_cases(admin_conn, 12)
    owner = await login_as(export_client, "operator_cc")

    # When the operator exports them
    response = await export_client.post(
        "/api/v1/exports",
        json={"kind": "cases", "format": "xlsx", "filters": {"open": True}},
        headers=owner,
    )
    job = await ok(response, 202)
    assert response.headers["Location"] == f"/api/v1/exports/{job['id']}"
    assert job["status"] in ("queued", "running", "done") and job["rows_estimate"] == 11  # capped
    await export_client.app[RUNNER].drained()

    # Then the job is done with every row, and its file is the operator's to download
    done = await ok(await export_client.get(f"/api/v1/exports/{job['id']}", headers=owner))
    assert (done["status"], done["rows_done"], done["progress_percent"]) == ("done", 12, 100.0)
    assert done["download_url"] == f"/api/v1/exports/{job['id']}/file"
    mine = await ok(await export_client.get("/api/v1/exports", headers=owner))
    assert [j["id"] for j in mine] == [job["id"]]
    file = await export_client.get(done["download_url"], headers=owner)
    assert file.status == 200
    rows = _xlsx_rows(await file.read())
    assert len(rows) == 13 and len(_xlsx_sheets(await file.read())) == 4

    # And to another user the export does not exist; the administrator may see it
    other = await login_as(export_client, "supervisor")
    await bad(await export_client.get(done["download_url"], headers=other), "", 404)
    await bad(await export_client.get(f"/api/v1/exports/{job['id']}", headers=other), "", 404)
    assert await ok(await export_client.get("/api/v1/exports", headers=other)) == []
    await bad(
        await export_client.get("/api/v1/exports", params={"everyone": "true"}, headers=other),
        "",
        403,
    )
    admin = await login_as(export_client, "admin")
    assert (await export_client.get(done["download_url"], headers=admin)).status == 200

    # And the export is journalled: who, what, which filters, how many rows
    entries = await admin_conn.fetch(
        "SELECT actor_login, action, new_value FROM audit_log WHERE entity_type = 'export' "
        "AND entity_id = $1",
        str(job["id"]),
    )
    assert len(entries) == 1
    assert entries[0]["actor_login"] == "operator.cc"
    journalled = entries[0]["new_value"]
    if isinstance(journalled, str):
        journalled = msgspec.json.decode(journalled)
    assert journalled == {
        "kind": "cases",
        "format": "xlsx",
        "filters": {"open": True, "order": "asc"},
        "rows": 12,
        "pii_visible": False,
    }

    # And once its keeping time is over the file is deleted: 410
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == [f"cases-{job['id']}.xlsx"]
    runner = export_client.app[RUNNER]
    assert await runner.purge(clock.now()) == []
    purged = await runner.purge(clock.now() + dt.timedelta(hours=24, minutes=1))
    assert [j.id for j in purged] == [job["id"]]
    assert list(tmp_path.iterdir()) == []
    await bad(await export_client.get(done["download_url"], headers=owner), "", 410)


async def test_a_small_export_streams_and_is_journalled(
    export_client, admin_conn: asyncpg.Connection
) -> None:
    await _seed_cases(admin_conn, 2)
    headers = await login_as(export_client, "operator_cc")
    response = await export_client.post(
        "/api/v1/exports", json={"kind": "cases", "filters": {}}, headers=headers
    )
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/csv")
    assert len(_csv_rows(await response.read())) == 3
    listed = await ok(await export_client.get("/api/v1/exports", headers=headers))
    assert [(j["status"], j["rows_done"], j["download_url"]) for j in listed] == [
        ("streamed", 2, None)
    ]
    assert (
        await admin_conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE entity_type = 'export' AND actor_login = 'operator.cc'"
        )
        == 1
    )


async def test_contacts_and_audit_exports_mask_personal_data_as_their_lists_do(
    export_client, admin_conn: asyncpg.Connection
) -> None:
    # Given a client with a contact who has a passport, created through the API (journalled)
    client_id = await admin_conn.fetchval(
        "INSERT INTO clients (first_name, last_name) VALUES ('Ганна', 'Щербак') RETURNING id"
    )
    admin = await login_as(export_client, "admin")
    created = await ok(
        await export_client.post(
            "/api/v1/contacts",
            json={
                "client_id": client_id,
                "first_name": "Ганна",
                "phone": "+380501234567",
                "passport_number": "КА 123456",
            },
            headers=admin,
        ),
        201,
    )
    operator = await login_as(export_client, "operator_cc")  # no clients.pii

    # When each exports the client's contacts
    for headers, passport in ((admin, "КА 123456"), (operator, "КА****56")):
        listed = await ok(
            await export_client.get(f"/api/v1/clients/{client_id}/contacts", headers=headers)
        )
        rows = _csv_rows(
            await _export(export_client, headers, "contacts", "csv", client_id=client_id)
        )
        # Then the rows are the card's contacts, the passport as the list shows it
        assert [int(r[0]) for r in rows[1:]] == [c["id"] for c in listed["items"]]
        assert rows[1][7] == passport == listed["items"][0]["passport_number"]

    # And the journal of that contact exports as its history reads, masked alike
    entity = f"contact/{created['id']}"
    history = await ok(await export_client.get(f"/api/v1/audit/{entity}", headers=admin))
    exported = _csv_rows(
        await _export(
            export_client,
            admin,
            "audit",
            "csv",
            entity_type="contact",
            entity_id=str(created["id"]),
        )
    )
    assert [int(r[0]) for r in exported[1:]] == [e["id"] for e in history["items"]]
    analyst = await login_as(export_client, "analyst")  # audit.read, no clients.pii
    masked = _csv_rows(
        await _export(
            export_client,
            analyst,
            "audit",
            "csv",
            entity_type="contact",
            entity_id=str(created["id"]),
        )
    )
    assert "КА 123456" not in "".join("".join(r) for r in masked)
    assert "КА****56" in "".join("".join(r) for r in masked)


async def test_segment_members_export_equals_its_member_pages(
    export_client, app_conn: asyncpg.Connection
) -> None:
    # Given a static segment of a loaded population
    await load_population(app_conn, n=120)
    marketer = await login_as(export_client, "marketer")
    segment = await ok(
        await export_client.post(
            "/api/v1/segments",
            headers=marketer,
            json={"name": "Борг у Києві", "kind": "static", "condition": DEBT_KYIV},
        ),
        201,
    )
    members = await ok(
        await export_client.get(
            f"/api/v1/segments/{segment['id']}/members",
            params={"limit": 10000},
            headers=marketer,
        )
    )
    assert members["client_ids"]
    # When its members are exported as a background job
    response = await export_client.post(
        "/api/v1/exports",
        json={
            "kind": "segment_members",
            "format": "xlsx",
            "filters": {"segment_id": segment["id"]},
            "background": True,
        },
        headers=marketer,
    )
    job = await ok(response, 202)
    await export_client.app[RUNNER].drained()
    response = await export_client.get(f"/api/v1/exports/{job['id']}/file", headers=marketer)
    assert response.status == 200
    # Then the file holds the member pages' client ids, in their order
    rows = _xlsx_rows(await response.read())
    assert rows[0] == ["client_id"]
    assert [int(r[0]) for r in rows[1:]] == members["client_ids"]
    # And an unknown segment is a 404
    await bad(
        await export_client.post(
            "/api/v1/exports",
            json={"kind": "segment_members", "filters": {"segment_id": 999999}},
            headers=marketer,
        ),
        "",
        404,
    )


def test_bench_exports_options_are_parsed() -> None:
    assert build_parser().parse_args(["bench", "exports"]).rows == 5_000_000
    args = build_parser().parse_args(["bench", "exports", "--rows", "1_000_000", "--keep"])
    assert (args.rows, args.keep) == (1_000_000, True)
    for wrong in (["--rows", "0"], ["--rows", "lots"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["bench", "exports", *wrong])
    assert bench_exports.size_label(5_000_000) == "5m"
    assert bench_exports.size_label(250_000) == "250k"


async def test_case_stats_export_equals_the_report(
    export_client, admin_conn: asyncpg.Connection
) -> None:
    await _seed_cases(admin_conn, 5)
    headers = await login_as(export_client, "supervisor")
    period = {
        "from": (clock.now() - dt.timedelta(days=10)).isoformat(),
        "to": clock.now().isoformat(),
        "group_by": "channel",
    }
    report = await ok(await export_client.get("/api/v1/case-stats", params=period, headers=headers))
    rows = _xlsx_rows(await _export(export_client, headers, "case_stats", "xlsx", **period))
    assert rows[0][:2] == ["channel", "created"]
    assert [(r[0], int(r[1])) for r in rows[1:]] == [
        (r["channel"], r["created"]) for r in report["rows"]
    ]


async def test_bad_input_is_a_problem_naming_the_field(export_client) -> None:
    headers = await login_as(export_client, "operator_cc")
    post = export_client.post
    await bad(await post("/api/v1/exports", json={"kind": "nope"}, headers=headers), "kind")
    await bad(
        await post("/api/v1/exports", json={"kind": "cases", "format": "pdf"}, headers=headers),
        "format",
    )
    await bad(
        await post(
            "/api/v1/exports",
            json={"kind": "cases", "filters": {"channel": "pigeon"}},
            headers=headers,
        ),
        "filters.channel",
    )
    await bad(
        await post(
            "/api/v1/exports",
            json={"kind": "cases", "filters": {"colour": "red"}},
            headers=headers,
        ),
        "filters.colour",
    )
    await bad(
        await post(
            "/api/v1/exports",
            json={"kind": "audit", "filters": {"entity_id": "1"}},
            headers=await login_as(export_client, "admin"),
        ),
        "entity_id",
    )
    # An operator may not export the audit journal
    await bad(await post("/api/v1/exports", json={"kind": "audit"}, headers=headers), "", 403)
    await bad(await export_client.get("/api/v1/exports/0", headers=headers), "export_id")
    await bad(await export_client.get("/api/v1/exports/12345", headers=headers), "", 404)


async def test_a_failed_job_leaves_no_file_and_a_dead_runners_job_is_taken_over(
    export_client, admin_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    from admin_api.exporting import RUNNER
    from crm import exports as jobs
    from herald.audit import Actor

    await _seed_cases(admin_conn, 3)
    runner = export_client.app[RUNNER]
    await runner.drained()
    user_id = await admin_conn.fetchval("SELECT id FROM users WHERE login = 'operator.cc'")
    owner = Actor(login="operator.cc", id=user_id)
    # Given a job on a segment deleted since it was queued
    gone = await jobs.create(
        admin_conn,
        owner,
        kind="segment_members",
        fmt="csv",
        filters={"segment_id": 999999},
        pii_visible=False,
        rows_estimate=None,
    )
    # And a job a runner took and then died on (its heartbeat two minutes old)
    taken = await jobs.create(
        admin_conn,
        owner,
        kind="cases",
        fmt="csv",
        filters={},
        pii_visible=False,
        rows_estimate=3,
    )
    await admin_conn.execute(
        "UPDATE export_jobs SET status = 'running', attempts = 1, "
        "heartbeat_at = herald_now() - interval '2 minutes' WHERE id = $1",
        taken.id,
    )

    # When the runner looks
    runner.wake()
    await runner.drained()

    # Then the first failed, saying why, with no file left behind
    failed = await jobs.get(admin_conn, gone.id)
    assert failed.status == "failed" and "no segment 999999" in (failed.error or "")
    # And the second was taken over and written whole
    done = await jobs.get(admin_conn, taken.id)
    assert (done.status, done.attempts, done.rows_done) == ("done", 2, 3)
    assert sorted(f.name for f in tmp_path.iterdir()) == [f"cases-{taken.id}.csv"]


async def test_campaign_recipients_export_each_recipients_last_status(
    export_client, admin_conn: asyncpg.Connection
) -> None:
    # Given a launched campaign of 4 recipients: delivered, failed, held, not reached yet
    template = await admin_conn.fetchval(
        "INSERT INTO message_templates (name, topic) VALUES ('Борг', 'debt') RETURNING id"
    )
    await admin_conn.execute(
        "INSERT INTO message_template_versions (template_id, version, variants) "
        "VALUES ($1, 1, '{}')",
        template,
    )
    campaign = await admin_conn.fetchval(
        "INSERT INTO campaigns (name, template_id, template_version, audience, status) "
        "VALUES ('Борг', $1, 1, '{\"kind\": \"clients\", \"client_ids\": [1]}', 'running') "
        "RETURNING id",
        template,
    )
    await admin_conn.execute(
        "INSERT INTO campaign_batches (campaign_id, step, batch_no, shard, client_ids) "
        "VALUES ($1, 0, 0, 0, '{11,12}'), ($1, 0, 1, 1, '{13,14}')",
        campaign,
    )
    t0 = clock.now() - dt.timedelta(hours=1)
    for message, client, status, at in (
        ("m11", 11, "sent", t0),
        ("m11", 11, "delivered", t0 + dt.timedelta(minutes=1)),
        ("m12", 12, "failed", t0),
    ):
        await admin_conn.execute(
            "INSERT INTO message_events (message_id, campaign_id, client_id, step, channel, "
            "status, at) VALUES ($1, $2, $3, 0, 'sms', $4, $5)",
            message,
            campaign,
            client,
            status,
            at,
        )
    await admin_conn.execute(
        "INSERT INTO held_messages (message_id, campaign_id, client_id, step, reason) "
        "VALUES ('m13', $1, 13, 0, 'quiet_hours')",
        campaign,
    )
    marketer = await login_as(export_client, "marketer")

    # When its recipients are exported
    rows = _csv_rows(
        await _export(export_client, marketer, "campaign_recipients", "csv", campaign_id=campaign)
    )

    # Then each recipient has the last status its history shows, held or pending otherwise
    assert rows[0] == ["client_id", "status", "step", "channel", "reason", "at"]
    assert [(r[0], r[1], r[4]) for r in rows[1:]] == [
        ("11", "delivered", ""),
        ("12", "failed", ""),
        ("13", "held", "quiet_hours"),
        ("14", "pending", ""),
    ]
    for row in rows[1:3]:
        history = await ok(
            await export_client.get(
                f"/api/v1/campaigns/{campaign}/recipients/{row[0]}", headers=marketer
            )
        )
        assert history["events"][-1]["status"] == row[1]
        assert _local(history["events"][-1]["at"]) == row[5]
    await bad(
        await export_client.post(
            "/api/v1/exports",
            json={"kind": "campaign_recipients", "filters": {"campaign_id": 999999}},
            headers=marketer,
        ),
        "",
        404,
    )
    # With a status: the rows of the page's list of that status, in CSV and XLSX alike
    for status in ("sent", "delivered", "failed"):
        listed = await ok(
            await export_client.get(
                f"/api/v1/campaigns/{campaign}/recipients?status={status}", headers=marketer
            )
        )
        expected = [
            [str(r["client_id"]), status, str(r["step"]), r["channel"], _local(r["at"])]
            for r in listed["items"]
        ]
        rows = _csv_rows(
            await _export(
                export_client,
                marketer,
                "campaign_recipients",
                "csv",
                campaign_id=campaign,
                status=status,
            )
        )
        assert expected and [[*r[:4], r[5]] for r in rows[1:]] == expected
        ((_, sheet),) = _xlsx_sheets(
            await _export(
                export_client,
                marketer,
                "campaign_recipients",
                "xlsx",
                campaign_id=campaign,
                status=status,
            )
        )
        assert sheet == rows
    await bad(
        await export_client.post(
            "/api/v1/exports",
            json={
                "kind": "campaign_recipients",
                "filters": {"campaign_id": campaign, "status": "x"},
            },
            headers=marketer,
        ),
        "filters.status",
    )
