"""The ``herald`` command: one entry point for every Herald process and chore.

The composition root: ``herald.cli`` and its modules (``up``, ``migrate``, ``seed``,
``demo``, ``demo_setup``, ``bench``, ``screenshots``, ``browser``) may import every other
package; no package of Herald's imports them (tests and ``loadtest`` do). Each command
imports what it runs only when it runs, so ``herald migrate`` does not load the web app,
the worker or Playwright.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop

from herald import __version__, clock
from herald.settings import Settings, SettingsError, load_settings, redact_url

BENCHMARKS: dict[
    str, tuple[str, Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]]
] = {}
"""name -> (description, coroutine); later modules register their benchmarks here."""
BENCHMARK_OPTIONS: dict[str, Callable[[argparse.ArgumentParser], None]] = {}
"""name -> function adding that benchmark's own options to its subparser (optional)."""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from herald.cli.bench import register_benchmarks

    register_benchmarks(BENCHMARKS, BENCHMARK_OPTIONS)
    parser = argparse.ArgumentParser(
        prog="herald",
        description="Herald: CRM core and customer-messaging engine. "
        "Settings come from HERALD_* environment variables (see README).",
    )
    parser.add_argument("--version", action="version", version=f"herald {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("migrate", help="apply pending database migrations")
    p.add_argument("--status", action="store_true", help="only show applied and pending versions")

    p = sub.add_parser("seed", help="load synthetic Ukrainian B2C data and demo users")
    p.add_argument(
        "--clients", type=_positive, default=10_000, help="number of clients (default 10000)"
    )
    p.add_argument("--seed", type=int, default=1, help="random seed; same seed, same data")
    p.add_argument(
        "--processes", type=_positive, default=None, help="generator processes (default: cores)"
    )
    p.add_argument("--reset", action="store_true", help="empty the CRM tables first")
    p.add_argument("--users-only", action="store_true", help="only create the demo users")

    p = sub.add_parser("rollups", help="bring the report aggregates up to date, or rebuild them")
    p.add_argument(
        "action",
        choices=("refresh", "rebuild"),
        help="refresh: recompute the dirty hours and fold message deltas; "
        "rebuild: recompute every hour from the cases and messages stored",
    )

    p = sub.add_parser("serve", help="run the admin API")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=_positive, default=None)

    p = sub.add_parser("worker", help="run dispatcher worker processes")
    p.add_argument(
        "--processes",
        type=_positive,
        default=None,
        help="worker processes (default HERALD_WORKER_PROCESSES)",
    )
    p.add_argument(
        "--realtime-processes",
        type=int,
        choices=range(0, 9),
        default=1,
        metavar="N",
        help="extra processes for realtime work only: triggers and "
        "operator sends (default 1; 0: the worker processes take it)",
    )

    sub.add_parser("simulators", help="run local simulators of outside providers")

    p = sub.add_parser("up", help="migrate, seed demo data if empty, run API + worker + simulators")
    p.add_argument(
        "--clients",
        type=_positive,
        default=10_000,
        help="demo clients to seed into an empty database (default 10000)",
    )

    p = sub.add_parser("screenshots", help="PNGs of the web UI's main pages (demo data, Chromium)")
    p.add_argument("--out", default="screenshots", help="directory for the PNGs")
    p = sub.add_parser("bench", help="run a benchmark (see `herald bench --help`)")
    bench = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, (description, _) in sorted(BENCHMARKS.items()):
        bench_parser = bench.add_parser(name, help=description)
        if name in BENCHMARK_OPTIONS:
            BENCHMARK_OPTIONS[name](bench_parser)
    return parser


async def _migrate(settings: Settings, status_only: bool) -> int:
    from herald.cli.migrate import MigrationError, discover, migrate, plan
    from herald.db import admin_connection

    files = discover()
    async with admin_connection(settings) as conn:
        try:
            if status_only:
                found = await plan(conn, files)
                print(
                    f"database version {found.current:04d}; pending: "
                    + (", ".join(f"{m.version:04d}_{m.name}" for m in found.pending) or "none")
                )
                return 0
            applied = await migrate(conn, files)
            # Partitions ahead of time (the application role may not create tables):
            # audit years this and the next two, message-event months this and the next 12.
            await conn.execute(
                "SELECT audit_log_ensure_partitions($1, 3)", clock.today(dt.UTC).year
            )
            await conn.execute("SELECT message_events_ensure_partitions(herald_now()::date, 13)")
            await conn.execute(
                "SELECT meter_readings_ensure_partitions($1, 3)", clock.today(dt.UTC).year
            )
            await conn.execute("SELECT timeline_events_ensure_partitions(herald_now()::date, 13)")
            # The BI role's rights on the bi views, whenever the role was created (0071).
            await conn.execute("SELECT herald_bi_grant()")
        except MigrationError as exc:
            print(f"herald migrate: {exc}", file=sys.stderr)
            return 1
    for m in applied:
        print(f"applied {m.version:04d}_{m.name}")
    print(f"database at version {files[-1].version:04d}" if files else "no migrations")
    return 0


async def _seed(settings: Settings, args: argparse.Namespace) -> int:
    from crm.users import PasswordPolicy
    from herald.cli.demo import ensure_demo_users, format_logins
    from herald.cli.demo_setup import CALENDAR, ensure_demo_setup
    from herald.db import create_pool

    if not args.users_only:
        from herald.cli.seed import SeedError, seed_crm

        try:
            report = await seed_crm(
                settings,
                clients=args.clients,
                seed=args.seed,
                processes=args.processes,
                reset=args.reset,
            )
        except SeedError as exc:
            print(f"herald seed: {exc}", file=sys.stderr)
            return 1
        rows = ", ".join(f"{table} {count:,}" for table, count in report.rows.items())
        print(f"Seeded in {report.total_seconds:.1f} s: {rows}")
    pool = await create_pool(settings)
    try:
        async with pool.acquire() as conn:
            demo = await ensure_demo_users(conn, PasswordPolicy(settings.password_min_length))
            setup = await ensure_demo_setup(conn)
            from herald.cli.demo_history import ensure_demo_history

            history = await ensure_demo_history(conn)
    finally:
        await pool.close()
    if not args.users_only or history.cases:
        # Fill the report aggregates from what was loaded (the bulk loader bypasses triggers).
        await _rollups(settings, "rebuild")
    print(format_logins(demo))
    if setup.templates or setup.calendar or setup.sla_policies or setup.escalation_rules:
        print(
            f"Demo workspace: {len(setup.templates)} operator templates, "
            f"{len(setup.sla_policies)} SLA policies on the calendar «{CALENDAR}», "
            f"{len(setup.escalation_rules)} escalation rules created"
        )
    if history.cases:
        print(
            f"Demo history: {history.cases:,} cases ({history.open_cases:,} open), "
            f"{history.calls:,} calls, {history.messages:,} messages, "
            f"{history.readings:,} meter readings, {history.contact_changes:,} contact changes "
            f"for {history.clients:,} clients"
        )
    return 0


async def _rollups(settings: Settings, action: str) -> int:
    from crm.reports import rollups
    from dispatcher import reports
    from herald.db import admin_connection

    started = time.monotonic()
    async with admin_connection(settings) as conn:
        marked = 0
        if action == "rebuild":
            await rollups.clear(conn)
            marked = await rollups.mark_all(conn)
        hours = await rollups.refresh_all(conn)
        folded = await (reports.rebuild(conn) if action == "rebuild" else reports.fold(conn))
    print(
        f"Report rollups: {hours:,} case hours recomputed ({marked:,} marked), "
        f"{folded:,} message deltas folded in {time.monotonic() - started:.1f} s"
    )
    return 0


def _serve(settings: Settings, host: str | None, port: int | None) -> int:
    from aiohttp import web

    from admin_api.app import init_app

    host = host or settings.http_host
    port = port or settings.http_port
    print(f"Herald API on http://{host}:{port}/ (OpenAPI: /api/v1/openapi.json)", flush=True)
    web.run_app(
        init_app(settings),
        host=host,
        port=port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )
    return 0


def _simulators(settings: Settings) -> int:
    from aiohttp import web

    from providers.sim.server import init_simulators_app

    print(
        f"Simulators on http://{settings.simulators_host}:{settings.simulators_port}/, "
        f"SMTP sink on {settings.smtp_host}:{settings.smtp_port}",
        flush=True,
    )
    web.run_app(
        init_simulators_app(settings, smtp_sink=True),
        host=settings.simulators_host,
        port=settings.simulators_port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )
    return 0


async def _prepare_demo(settings: Settings, clients: int) -> int:
    """Migrate, and seed demo data only into an empty database."""
    code = await _migrate(settings, status_only=False)
    if code:
        return code
    from herald.db import admin_connection

    async with admin_connection(settings) as conn:
        empty = not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM clients)")
    args = argparse.Namespace(
        clients=clients, seed=1, processes=None, reset=False, users_only=not empty
    )
    return await _seed(settings, args)


def _up(settings: Settings, clients: int) -> int:
    from herald.cli.up import child_commands, supervise

    code = uvloop.run(_prepare_demo(settings, clients))
    if code:
        return code
    print(
        f"\nHerald is starting: open http://{settings.http_host}:{settings.http_port}/ "
        f"(the web UI: log in with a demo login above; readiness: /readyz). "
        f"Ctrl-C stops everything.\n",
        flush=True,
    )
    return supervise(child_commands())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(os.environ)
    except SettingsError as exc:
        print(f"herald: configuration error: {exc}", file=sys.stderr)
        return 2
    from herald.logs import configure_logging

    clock.configure(settings)
    from crm.users import configure_hashing

    configure_hashing(
        time_cost=settings.password_hash_time_cost, memory_kib=settings.password_hash_memory_kib
    )
    configure_logging(settings, args.command)
    try:
        if args.command == "migrate":
            return uvloop.run(_migrate(settings, args.status))
        if args.command == "seed":
            return uvloop.run(_seed(settings, args))
        if args.command == "rollups":
            return uvloop.run(_rollups(settings, args.action))
        if args.command == "serve":
            return _serve(settings, args.host, args.port)
        if args.command == "worker":
            from dispatcher.worker import run_workers

            return run_workers(
                settings, args.processes or settings.worker_processes, args.realtime_processes
            )
        if args.command == "simulators":
            return _simulators(settings)
        if args.command == "up":
            return _up(settings, args.clients)
        if args.command == "screenshots":
            from pathlib import Path

            from herald.cli.screenshots import run as screenshots

            return uvloop.run(screenshots(settings, Path(args.out)))
        if args.command == "bench":
            return uvloop.run(BENCHMARKS[args.benchmark][1](settings, args))
    except (TimeoutError, OSError) as exc:
        # Connection refused and the like: say which service, not a traceback.
        print(
            f"herald {args.command}: cannot reach a service: {exc}\n"
            f"  database: {redact_url(settings.database_url)}\n"
            f"  rabbitmq: {redact_url(settings.amqp_url)}\n"
            f"  redis:    {redact_url(settings.redis_url)}\n"
            "  run scripts/ensure-services.sh to start them",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {args.command}")
