"""``herald bench reports``: every report over a year of data, with filters, p50/p95.

Runs against the configured database. The benchmark cases of ``herald bench cases`` are
loaded once if missing (``--cases`` historical over five years, as that benchmark loads
them; needs seeded clients), and the rollups are rebuilt from them when they are not up
to date (timed: ``rollup_rebuild_s``). Each report is then run ``--runs`` times through
the SQL the API runs (crm.reports / dispatcher.reports; the HTTP layer adds JSON
encoding only). A late correction - ``--corrections`` cases reclassified across the
year, then one refresh - is timed as ``correction_refresh_ms``.

The last line printed is one JSON object: ``cases``, ``reports_ms`` (per report
``{"p50", "p95"}``) and the rollup figures; ``export_csv_5m_s``, ``export_xlsx_5m_s``
and ``export_peak_rss_mb`` are null here (the export engine's benchmark fills them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

import asyncpg
from argon2 import PasswordHasher

from crm.reports import rollups
from crm.reports.cases import CaseReportQuery, case_report, operator_query
from crm.reports.periods import Spec, fetch
from crm.reports.team import TeamReportQuery, agents, backlog
from dispatcher import reports as messaging
from dispatcher.reports import MessagingReportQuery
from herald.cli.bench.card import percentiles
from herald.cli.bench.cases_seed import seed_cases
from herald.db import admin_connection
from herald.settings import Settings

Say = Callable[[str], None]


def _count(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= 20_000_000:
        raise argparse.ArgumentTypeError(f"must be between 1 and 20000000, got {value}")
    return value


def _runs(text: str) -> int:
    value = _count(text)
    if not 2 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"must be between 2 and 1000, got {value}")
    return value


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cases",
        type=_count,
        default=10_000_000,
        help="historical benchmark cases over five years, loaded once (default 10,000,000)",
    )
    parser.add_argument("--runs", type=_runs, default=20, help="runs per report (default 20)")
    parser.add_argument(
        "--corrections",
        type=_count,
        default=1000,
        help="cases reclassified for the late-correction refresh (default 1000)",
    )


def _reports(agent_id: int, topic: str) -> dict[str, Spec]:
    return {
        "cases_year": case_report(CaseReportQuery(period="year")),
        "cases_by_channel_filtered": case_report(
            CaseReportQuery(
                period="year", group_by="channel", case_type="technical", priority="high"
            )
        ),
        "cases_by_topic_top10": case_report(
            CaseReportQuery(period="year", group_by="topic", topic=topic, top=10)
        ),
        "cases_by_agent": case_report(CaseReportQuery(period="year", group_by="agent")),
        "cases_trend_day": case_report(CaseReportQuery(period="year", group_by="day")),
        "cases_trend_week_channel": case_report(
            CaseReportQuery(period="year", group_by="week", channel="call")
        ),
        "cases_trend_hour_30_days": case_report(
            CaseReportQuery(period="last_30_days", group_by="hour")
        ),
        "fcr_by_group": case_report(CaseReportQuery(period="year", group_by="group")),
        "operator_month": case_report(
            operator_query(CaseReportQuery(period="month"), agent_id), name="operator"
        ),
        "operator_year": case_report(
            operator_query(CaseReportQuery(period="year"), agent_id), name="operator"
        ),
        "team_year": agents(TeamReportQuery(period="year")),
        "backlog": backlog(),
        "messaging_by_source_year": messaging.messaging_report(
            MessagingReportQuery(period="year", group_by="source_channel")
        ),
        "messaging_by_day_year": messaging.messaging_report(
            MessagingReportQuery(period="year", group_by="day")
        ),
    }


async def _time(conn: asyncpg.Connection, spec: Spec, runs: int) -> dict[str, float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await fetch(conn, spec)
        samples.append((time.perf_counter() - started) * 1000)
    cuts = percentiles(samples)
    return {"p50": cuts["p50"], "p95": cuts["p95"]}


async def run_reports_bench(
    settings: Settings, *, cases: int, runs: int, corrections: int, say: Say
) -> dict[str, object]:
    figures: dict[str, object] = {}
    async with admin_connection(settings) as conn:
        figures["seed"] = await seed_cases(
            conn,
            history=cases,
            open_cases=min(50_000, max(cases // 200, 1)),
            agents=50,
            password_hash=PasswordHasher().hash("Bench-agent-password-1"),
            say=say,
        )
        figures["cases"] = await conn.fetchval(
            "SELECT reltuples::bigint FROM pg_class WHERE relname = 'cases'"
        )
        empty = not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM report_case_daily)")
        if empty or figures["seed"]:
            say("rebuilding the rollups from every case and message ...")
            started = time.monotonic()
            await rollups.clear(conn)
            await rollups.mark_all(conn)
            hours = await rollups.refresh_all(conn, batch_hours=500)
            await messaging.rebuild(conn)
            figures["rollup_rebuild_s"] = round(time.monotonic() - started, 1)
            say(f"  {hours:,} hours in {figures['rollup_rebuild_s']} s")
        else:
            await rollups.refresh_all(conn)
            await messaging.fold(conn)
        figures["rollup_rows"] = {
            t: await conn.fetchval(f"SELECT count(*) FROM {t}")
            for t in ("report_case_hourly", "report_case_daily", "report_message_daily")
        }
        await conn.execute("ANALYZE report_case_hourly, report_case_daily, report_message_daily")
        agent_id = await conn.fetchval(
            "SELECT agent_id FROM report_case_daily WHERE agent_id IS NOT NULL LIMIT 1"
        )
        topic = await conn.fetchval(
            "SELECT code FROM case_categories WHERE parent_id IS NULL ORDER BY position LIMIT 1"
        )
        reports_ms: dict[str, dict[str, float]] = {}
        for name, spec in _reports(agent_id or 1, topic).items():
            reports_ms[name] = await _time(conn, spec, runs)
            say(f"  {name}: p50 {reports_ms[name]['p50']} ms, p95 {reports_ms[name]['p95']} ms")
        figures["reports_ms"] = reports_ms
        # A late correction: cases across the year reclassified, then one refresh.
        ids = [
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM cases TABLESAMPLE SYSTEM (1) "
                "WHERE created_at > herald_now() - interval '1 year' LIMIT $1",
                corrections,
            )
        ]
        await conn.execute(
            "UPDATE cases SET priority = CASE priority WHEN 'urgent' THEN 'low' ELSE 'urgent' END "
            "WHERE id = ANY($1::bigint[])",
            ids,
        )
        started = time.monotonic()
        dirty = await rollups.refresh_all(conn)
        figures["correction_refresh_ms"] = round((time.monotonic() - started) * 1000, 1)
        figures["correction_cases"] = len(ids)
        figures["correction_hours"] = dirty
    figures["runs"] = runs
    figures["measured_at"] = "database (the SQL each API report runs)"
    figures["export_csv_5m_s"] = None
    figures["export_xlsx_5m_s"] = None
    figures["export_peak_rss_mb"] = None
    return figures


async def main(settings: Settings, args: argparse.Namespace) -> int:
    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    figures = await run_reports_bench(
        settings, cases=args.cases, runs=args.runs, corrections=args.corrections, say=say
    )
    print(json.dumps(figures, ensure_ascii=False), flush=True)
    return 0
