"""`herald bench exports`: CSV and XLSX export of N rows (SR-13), time and peak memory.

The rows are case-list shaped (the 16 columns of the case export, times formatted in
SQL, Ukrainian subjects with commas and quotes), loaded once into an UNLOGGED scratch
table of the configured database (admin URL) and dropped at the end. Each export runs
in a fresh process (``spawn``) through the product's engine (``herald.exports``: COPY to
a file for CSV, the streaming writer for XLSX, a new sheet every 1,048,576 rows), so
its ``ru_maxrss`` is the peak resident memory of the process doing that export alone.

The last line is one JSON object: ``export_csv_<n>_s``, ``export_xlsx_<n>_s`` (``n``
as 5m, 1m, 250k...), ``export_peak_rss_mb`` (the larger of the two processes), rows,
sheets and file sizes. SR-13's targets at 5 M rows: CSV <= 60 s, XLSX <= 5 min, peak
RSS <= 200 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from herald import exports
from herald.exports import ExportQuery
from herald.settings import Settings

TABLE = "herald_bench_export_rows"
COLUMNS = (
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
    "sla_state",
)


def _rows_option(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1_000 <= value <= 50_000_000:
        raise argparse.ArgumentTypeError(f"must be between 1,000 and 50,000,000, got {value}")
    return value


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rows", type=_rows_option, default=5_000_000, help="rows exported (default 5,000,000)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch table for another run"
    )


def size_label(n: int) -> str:
    """5000000 -> 5m, 250000 -> 250k, 1500000 -> 1.5m."""
    if n >= 1_000_000:
        return f"{n / 1_000_000:g}m"
    if n >= 1_000:
        return f"{n / 1_000:g}k"
    return str(n)


_FILL = f"""
CREATE UNLOGGED TABLE IF NOT EXISTS {TABLE} AS
SELECT g AS id,
       'ЗВ-2026-' || lpad(g::text, 7, '0') AS number,
       (ARRAY['call','viber','telegram','site','email','cabinet','app','walk_in'])[1 + g % 8]
           AS channel,
       (ARRAY['new','in_progress','on_hold','resolved','closed'])[1 + g % 5] AS status,
       (ARRAY['low','normal','high','urgent'])[1 + g % 4] AS priority,
       (ARRAY['technical','financial','informational'])[1 + g % 3] AS case_type,
       CASE WHEN g % 7 > 0 THEN 1 + g % 40 END AS category_id,
       CASE WHEN g % 11 > 0 THEN 1 + (g * 7919) % 5000000 END AS client_id,
       CASE WHEN g % 3 > 0 THEN 'Питання щодо рахунку №' || g || ', «газ» і "лічильник"' END
           AS subject,
       g % 13 = 0 AS is_repeat,
       CASE WHEN g % 97 = 0 THEN g - 1 END AS duplicate_of_id,
       NULL::bigint AS merged_into_id,
       CASE WHEN g % 5 > 0 THEN 1 + g % 300 END AS assignee_id,
       timestamptz '2026-01-01 08:00+02' + g * interval '5 seconds' AS created_at,
       timestamptz '2026-01-01 08:00+02' + g * interval '5 seconds' + interval '2 hours'
           AS status_changed_at,
       (ARRAY['none','ok','warning','breached'])[1 + g % 4] AS sla_state
FROM generate_series(1, $1::bigint) g
"""


def export_query(rows: int) -> ExportQuery:
    local = "to_char({0} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS {0}"
    selected = ", ".join(
        local.format(c) if c in ("created_at", "status_changed_at") else c for c in COLUMNS
    )
    return ExportQuery(
        f"SELECT {selected} FROM {TABLE} WHERE id <= $1 ORDER BY id", (rows,), COLUMNS, "cases"
    )


async def _export(url: str, fmt: str, rows: int, path: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    started = time.perf_counter()
    shown = [0]

    async def progress(done: int) -> None:
        if done - shown[0] >= 500_000:
            shown[0] = done
            print(f"  xlsx: {done:,} rows", file=sys.stderr, flush=True)

    try:
        async with exports.transaction(conn):
            if fmt == "csv":
                with open(path, "wb") as out:

                    async def write(chunk: bytes) -> None:
                        out.write(chunk)

                    done = await exports.write_csv(conn, export_query(rows), write)
            else:
                done = await exports.write_xlsx(
                    conn, export_query(rows), Path(path), progress=progress
                )
    finally:
        await conn.close()
    seconds = time.perf_counter() - started
    sheets = 0
    if fmt == "xlsx":
        with zipfile.ZipFile(path) as z:
            sheets = sum(1 for n in z.namelist() if n.startswith("xl/worksheets/sheet"))
    return {
        "rows": done,
        "seconds": round(seconds, 1),
        # ru_maxrss is in KiB on Linux.
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "file_mb": round(os.path.getsize(path) / 1e6, 1),
        "sheets": sheets,
    }


def export_in_child(url: str, fmt: str, rows: int, path: str) -> dict[str, Any]:
    """Run one export in this (fresh) process and report its figures."""
    return asyncio.run(_export(url, fmt, rows, path))


async def _in_fresh_process(url: str, fmt: str, rows: int, path: str) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        result: dict[str, Any] = await asyncio.get_running_loop().run_in_executor(
            pool, export_in_child, url, fmt, rows, path
        )
    return result


async def run_exports_bench(
    settings: Settings, *, rows: int, keep: bool, say: Callable[[str], None]
) -> dict[str, Any]:
    url = settings.database_admin_url
    conn = await asyncpg.connect(url)
    try:
        have = 0
        if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", TABLE):
            have = await conn.fetchval(
                f"SELECT count(*) FROM (SELECT 1 FROM {TABLE} LIMIT $1) s", rows
            )
        if have < rows:
            say(f"loading {rows:,} case-shaped rows into {TABLE} (once)...")
            started = time.perf_counter()
            await conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
            await conn.execute(_FILL, rows)
            await conn.execute(f"ALTER TABLE {TABLE} ADD PRIMARY KEY (id)")
            await conn.execute(f"VACUUM ANALYZE {TABLE}")
            say(f"  loaded in {time.perf_counter() - started:.1f} s")
        label = size_label(rows)
        figures: dict[str, Any] = {"rows": rows, "columns": len(COLUMNS)}
        with tempfile.TemporaryDirectory(prefix="herald-bench-exports-") as folder:
            for fmt in ("csv", "xlsx"):
                say(f"exporting {rows:,} rows as {fmt.upper()} in a fresh process...")
                found = await _in_fresh_process(url, fmt, rows, f"{folder}/export.{fmt}")
                if found["rows"] != rows:
                    raise RuntimeError(f"{fmt}: {found['rows']} rows exported, not {rows}")
                say(
                    f"  {found['seconds']} s, peak RSS {found['peak_rss_mb']} MB, "
                    f"{found['file_mb']} MB"
                    + (f", {found['sheets']} sheets" if found["sheets"] else "")
                )
                figures[f"export_{fmt}_{label}_s"] = found["seconds"]
                figures[f"export_{fmt}_peak_rss_mb"] = found["peak_rss_mb"]
                figures[f"export_{fmt}_file_mb"] = found["file_mb"]
                if fmt == "xlsx":
                    figures["export_xlsx_sheets"] = found["sheets"]
        figures["export_peak_rss_mb"] = max(
            figures["export_csv_peak_rss_mb"], figures["export_xlsx_peak_rss_mb"]
        )
        return figures
    finally:
        if not keep:
            await conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        await conn.close()


async def main(settings: Settings, args: argparse.Namespace) -> int:
    """Run the benchmark and print its JSON figures as the last line."""

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    figures = await run_exports_bench(settings, rows=args.rows, keep=args.keep, say=say)
    print(json.dumps(figures, ensure_ascii=False), flush=True)
    return 0
