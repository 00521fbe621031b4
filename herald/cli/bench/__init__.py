"""The benchmarks ``herald bench`` runs, and the options each one takes.

``herald.cli.build_parser`` calls :func:`register_benchmarks` with its two registries.
The measuring code is imported only when a benchmark runs, so the CLI stays quick.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from herald.settings import Settings

Benchmark = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]
AddOptions = Callable[[argparse.ArgumentParser], None]

_GROUPS = ("rabbitmq", "postgresql", "redis", "http")


def _whole_number(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value <= 60:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 60, got {value:g}")
    return value


_batch_size = _whole_number(2, 100_000)


def _groups(text: str) -> tuple[str, ...]:
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [g for g in chosen if g not in _GROUPS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(_GROUPS)}; got {text!r}"
        )
    return chosen


def _primitives_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seconds",
        type=_seconds,
        default=3.0,
        help="time budget of each step (default 3; each step also stops at its count limit)",
    )
    parser.add_argument(
        "--only",
        type=_groups,
        default=_GROUPS,
        metavar="GROUPS",
        help="comma-separated subset of: " + ", ".join(_GROUPS),
    )
    parser.add_argument(
        "--batch-size",
        type=_batch_size,
        default=1000,
        help="recipients per message in the batched publish (default 1000)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the report as JSON on stdout (progress stays on stderr)",
    )


async def _primitives(settings: Settings, args: argparse.Namespace) -> int:
    """Measure the raw primitives of ARCHITECTURE.md on this machine."""
    from herald.cli.bench.primitives import (
        Bounds,
        NotLocalError,
        format_table,
        report_json,
        run_primitives,
    )

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    bounds = Bounds(seconds=args.seconds, batch_size=args.batch_size)
    try:
        report = await run_primitives(settings, bounds, groups=args.only, progress=progress)
    except NotLocalError as exc:
        print(f"herald bench primitives: {exc}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.buffer.write(report_json(report) + b"\n")
        sys.stdout.flush()
    else:
        print(format_table(report))
    return 1 if any(m.error for m in report.measurements) else 0


def _count(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= 20_000_000:
        raise argparse.ArgumentTypeError(f"must be between 1 and 20000000, got {value}")
    return value


def _chain(text: str) -> list[str]:
    chain = [c.strip() for c in text.split(",") if c.strip()]
    if (
        not chain
        or any(c not in ("email", "viber", "sms") for c in chain)
        or len(set(chain)) != len(chain)
    ):
        raise argparse.ArgumentTypeError(
            f"a comma-separated chain of email, viber, sms; got {text!r}"
        )
    return chain


def _campaign_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--recipients",
        type=_count,
        default=100_000,
        help="clients to seed and send to (default 100000; kept between runs)",
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--chain",
        type=_chain,
        default=["viber", "sms"],
        help="channel chain (default viber,sms; e-mail goes through real SMTP, about 2,000/s here)",
    )


async def _campaign(settings: Settings, args: argparse.Namespace) -> int:
    """Run one campaign through the whole pipeline and account for every recipient."""
    from herald.cli.bench.campaign import main_json, run_campaign_bench

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    figures = await run_campaign_bench(
        settings, recipients=args.recipients, workers=args.workers, chain=args.chain, say=say
    )
    print(main_json(figures), flush=True)
    return 0 if figures["lost"] == 0 and figures["status"] == "completed" else 1


def _funnel_options(parser: argparse.ArgumentParser) -> None:
    _campaign_options(parser)
    parser.add_argument(
        "--sample",
        type=_seconds,
        default=0.25,
        help="seconds between two counts of the database's truth (default 0.25)",
    )
    parser.add_argument(
        "--rounds",
        type=_whole_number(1, 10),
        default=2,
        help="pairs of runs, unwatched then watched (default 2)",
    )


async def _funnel(settings: Settings, args: argparse.Namespace) -> int:
    """The live funnel's delay behind the database, and what the open page costs."""
    from herald.cli.bench.funnel import run_funnel_bench

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    figures = await run_funnel_bench(
        settings,
        recipients=args.recipients,
        workers=args.workers,
        chain=args.chain,
        sample=args.sample,
        rounds=args.rounds,
        say=say,
    )
    print(json.dumps(figures, ensure_ascii=False), flush=True)
    return 0


_requests = _whole_number(20, 100_000)


_concurrency = _whole_number(1, 64)


def _card_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--requests", type=_requests, default=1000, help="requests per figure (default 1000)"
    )
    parser.add_argument(
        "--concurrency",
        type=_concurrency,
        default=4,
        help="operators calling at the same time (default 4)",
    )
    parser.add_argument("--seed", type=int, default=1, help="sampling seed (default 1)")


async def _card(settings: Settings, args: argparse.Namespace) -> int:
    """Card, search and call identification latencies through the HTTP API."""
    from herald.cli.bench.card import bench_settings, run_card_bench

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    figures = await run_card_bench(
        bench_settings(settings),
        requests=args.requests,
        concurrency=args.concurrency,
        seed=args.seed,
        say=say,
    )
    print(json.dumps(figures, ensure_ascii=False), flush=True)
    return 0


_case_count = _whole_number(1_000, 50_000_000)
_open_count = _whole_number(100, 1_000_000)


def _cases_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cases",
        type=_case_count,
        default=10_000_000,
        help="historical (closed) cases to load once (default 10,000,000)",
    )
    parser.add_argument(
        "--open-cases",
        type=_open_count,
        default=50_000,
        help="open cases to load once (default 50,000)",
    )
    parser.add_argument(
        "--requests",
        type=_requests,
        default=300,
        help="requests per channel and figure (default 300)",
    )
    parser.add_argument(
        "--concurrency", type=_concurrency, default=4, help="callers at the same time (default 4)"
    )
    parser.add_argument(
        "--rules",
        type=_rule_count,
        default=0,
        help="also measure intake with this many active case rules of realistic kinds "
        "(installed for the run, removed afterwards; default 0: intake without rules only)",
    )


_rule_count = _whole_number(0, 500)


async def _cases(settings: Settings, args: argparse.Namespace) -> int:
    """Case intake, queue, SLA evaluator and supervisor push over millions of cases."""
    from herald.cli.bench.cases import bench_settings, run_cases_bench

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    figures = await run_cases_bench(
        bench_settings(settings),
        history=args.cases,
        open_cases=args.open_cases,
        requests=args.requests,
        concurrency=args.concurrency,
        rules=args.rules,
        say=say,
    )
    print(json.dumps(figures, ensure_ascii=False), flush=True)
    return 0


def register_benchmarks(
    benchmarks: dict[str, tuple[str, Benchmark]], options: dict[str, AddOptions]
) -> None:
    """Add this module's benchmarks to the CLI registries (idempotent)."""
    benchmarks["primitives"] = (
        "re-measure the raw primitives (RabbitMQ, PostgreSQL, Redis, HTTP) on this machine",
        _primitives,
    )
    options["primitives"] = _primitives_options
    benchmarks["campaign"] = (
        "one campaign to N seeded clients through API, workers and simulators; JSON figures",
        _campaign,
    )
    options["campaign"] = _campaign_options
    benchmarks["card"] = (
        "client card, search and incoming-call identification through the HTTP API, "
        "on the configured (13 M) database; JSON percentiles",
        _card,
    )
    options["card"] = _card_options
    benchmarks["cases"] = (
        "case intake per channel, the queue, one SLA evaluator cycle and the supervisor's "
        "live push over 10 M historical and 50 k open cases (loaded once); JSON figures",
        _cases,
    )
    options["cases"] = _cases_options
    from herald.cli.bench import exports as bench_exports
    from herald.cli.bench import reports as bench_reports
    from herald.cli.bench import segments as bench_segments
    from herald.cli.bench import ui as bench_ui

    benchmarks["ui"] = (
        "web UI: card and search page server time, ringing -> card in Chromium, "
        "first-visit JS+CSS; on the configured database",
        bench_ui.main,
    )
    options["ui"] = bench_ui.add_options

    benchmarks["segments"] = (
        "segment preview, a 5 M materialisation and set operations on the configured "
        "(13 M) database; JSON figures",
        bench_segments.main,
    )
    options["segments"] = bench_segments.add_options

    benchmarks["funnel"] = (
        "the campaign page's live funnel behind the database (p99), and the campaign's "
        "rate with the page open vs not; on a seeded database of its own; JSON figures",
        _funnel,
    )
    options["funnel"] = _funnel_options
    benchmarks["exports"] = (
        "CSV and XLSX export of N case-shaped rows (default 5 M) through the export "
        "engine, each in a fresh process; time and peak RSS as JSON",
        bench_exports.main,
    )
    options["exports"] = bench_exports.add_options
    benchmarks["reports"] = (
        "every report over a year of the 10 M benchmark cases, with filters, and a late "
        "correction's refresh; JSON percentiles",
        bench_reports.main,
    )
    options["reports"] = bench_reports.add_options
