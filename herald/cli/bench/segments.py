"""``herald bench segments``: preview, materialisation and set operations at full scale.

Runs against the configured database (the 13 M seed): a 3-condition preview, one
segment of about ``--members`` clients materialised, and the union, intersection and
exclusion of two segments of about ``--set-members`` each. The segments it makes are
deleted afterwards (unless ``--keep``), and their member sets purged (not timed). Prints
progress on stderr and, as its last line, one JSON object. The trigger latencies come
from ``herald.cli.bench.triggers``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from herald.audit import Actor
from herald.settings import Settings

if TYPE_CHECKING:
    import asyncpg

ACTOR = Actor(login="bench-segments")
PREVIEW = {
    "all": [
        {"attribute": "account.region", "op": "in", "value": ["UA-30", "UA-32", "UA-46", "UA-51"]},
        {"attribute": "billing.debt", "op": "gt", "value": 0},
        {"attribute": "billing.last_payment_at", "op": "older_than_days", "value": 60},
    ]
}


def count_option(text: str) -> int:
    """A number of members: 1 to 20,000,000 (underscores and commas allowed)."""
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= 20_000_000:
        raise argparse.ArgumentTypeError(f"must be between 1 and 20000000, got {value}")
    return value


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--members",
        type=count_option,
        default=5_000_000,
        help="size of the materialised segment (default 5000000)",
    )
    parser.add_argument(
        "--set-members",
        type=count_option,
        default=2_000_000,
        help="size of each operand of the set operations (default 2000000)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the segments made (default: delete them at the end)",
    )
    parser.add_argument(
        "--no-triggers",
        dest="triggers",
        action="store_false",
        help="skip the trigger latencies (herald.cli.bench.triggers)",
    )


def pick_regions(sizes: list[tuple[str, int]], target: int, *, skip: int = 0) -> list[str]:
    """Regions, largest first after ``skip`` of them, until their clients reach ``target``."""
    chosen: list[str] = []
    total = 0
    for code, size in sizes[skip:] + sizes[:skip]:
        if total >= target:
            break
        chosen.append(code)
        total += size
    return chosen


async def _timed(label: str, say: Callable[[str], None], work: Any) -> tuple[Any, float]:
    say(f"{label} ...")
    started = time.perf_counter()
    result = await work
    seconds = time.perf_counter() - started
    say(f"{label}: {seconds:,.2f} s")
    return result, seconds


async def run_segments_bench(
    settings: Settings,
    *,
    members: int,
    set_members: int,
    keep: bool,
    say: Callable[[str], None],
    triggers: bool = True,
) -> dict[str, Any]:
    """Measure, clean up, and return the figures (the trigger ones unless ``triggers`` is false)."""
    # Imported when run: `herald` imports this module to build its parser (keeps it quick).
    from crm.segments import member_sets, store
    from herald.cli.bench.triggers import trigger_latency
    from herald.db import create_pool

    pool = await create_pool(settings)
    made: list[int] = []
    figures: dict[str, Any] = {}
    try:
        async with pool.acquire() as conn:
            await conn.execute("SET statement_timeout = 0")
            figures["accounts"] = await conn.fetchval("SELECT count(*) FROM accounts")
            say(f"{figures['accounts']:,} accounts")
            preview, seconds = await _timed(
                "preview (3 conditions)", say, store.preview(conn, PREVIEW)
            )
            figures["preview_ms"] = round(seconds * 1000, 1)
            figures["preview"] = {
                "count": preview.count,
                "exact": preview.exact,
                "sample_percent": preview.sample_percent,
            }
            exact, seconds = await _timed(
                "the same count, exact", say, store.preview(conn, PREVIEW, exact=True)
            )
            figures["preview_exact"] = {"count": exact.count, "ms": round(seconds * 1000, 1)}
            sizes = [
                (r["region_code"], r["n"])
                for r in await conn.fetch(
                    "SELECT region_code, count(*) AS n FROM accounts GROUP BY 1 ORDER BY 2 DESC, 1"
                )
            ]

            async def segment(name: str, regions: list[str]) -> Any:
                condition = {"attribute": "account.region", "op": "in", "value": regions}
                made_segment = await store.create(
                    conn, ACTOR, name=name, kind="static", condition=condition, pool=pool
                )
                made.append(made_segment.id)
                return made_segment

            big, seconds = await _timed(
                f"materialise ~{members:,}",
                say,
                segment("bench: big", pick_regions(sizes, members)),
            )
            figures["materialise_5m_s"] = round(seconds, 2)
            figures["materialised_members"] = big.member_count
            left_regions = pick_regions(sizes, set_members)
            # The right operand starts at the left one's last region: they overlap.
            right_regions = pick_regions(sizes, set_members, skip=max(0, len(left_regions) - 1))
            left = await segment("bench: left", left_regions)
            right = await segment("bench: right", right_regions)
            figures["set_members"] = [left.member_count, right.member_count]
            figures["set_ops_s"] = {}
            for op in ("union", "intersection", "exclusion"):
                result, seconds = await _timed(
                    op, say, store.combine(conn, ACTOR, left.id, op, right.id, pool=pool)
                )
                made.append(result.id)
                figures["set_ops_s"][op] = round(seconds, 2)
                figures.setdefault("set_results", {})[op] = result.member_count
            if not keep:
                say(f"deleting the {len(made)} segments made")
                for segment_id in reversed(made):
                    await store.delete(conn, ACTOR, segment_id)
                made.clear()
                say("purging their member sets")
                while await member_sets.purge(pool, chunks=20, chunk=200_000, grace_s=0.0):
                    pass
    finally:
        if made and not keep:
            await _drop_quietly(pool, made)
        await pool.close()
    if triggers:
        say("trigger latency, idle")
        figures["trigger_idle_ms"] = await trigger_latency(settings, say=say)
        say("trigger latency during a campaign")
        figures["trigger_during_campaign_ms"] = await trigger_latency(
            settings, during_campaign=True, say=say
        )
    return figures


async def _drop_quietly(pool: asyncpg.Pool, ids: list[int]) -> None:
    from crm.segments import store  # when run, as above

    async with pool.acquire() as conn:
        await conn.execute("SET statement_timeout = 0")
        for segment_id in reversed(ids):
            try:
                await store.delete(conn, ACTOR, segment_id)
            except Exception as exc:  # cleanup after a failure: report and go on
                print(f"could not delete segment {segment_id}: {exc}", file=sys.stderr)


async def main(settings: Settings, args: argparse.Namespace) -> int:
    """Run the benchmark and print its JSON figures as the last line."""

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    figures = await run_segments_bench(
        settings,
        members=args.members,
        set_members=args.set_members,
        keep=args.keep,
        say=say,
        triggers=args.triggers,
    )
    print(json.dumps(figures, ensure_ascii=False), flush=True)
    return 0
