"""The primitives benchmark works against the real services and leaves nothing behind.

Rates are not asserted against any figure: this machine may be busy. Each test only
checks that a measurement did some work in a bounded time and cleaned up.
"""

from __future__ import annotations

import argparse
import json

import aio_pika
import aio_pika.exceptions
import msgspec
import pytest
import redis.asyncio as aioredis

from herald.cli import build_parser
from herald.cli.bench import register_benchmarks
from herald.cli.bench.primitives import (
    Bounds,
    Measurement,
    NotLocalError,
    bench_queue_name,
    ensure_local,
    format_table,
    measure_amqp_publish,
    measure_http_loopback,
    measure_pg_copy,
    measure_pg_insert,
    measure_redis_lua,
    measure_redis_pipeline,
    report_json,
    run_primitives,
)
from herald.settings import Settings

TINY = 0.2  # seconds per measurement


def _did_work(m: Measurement) -> None:
    assert m.error is None
    assert m.count > 0 and m.operations > 0
    assert 0 < m.seconds < 5
    assert m.rate > 0


async def _queue_exists(settings: Settings, name: str) -> bool:
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        try:
            await channel.declare_queue(name, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return False
        return True
    finally:
        await connection.close()


async def _namespace_keys(settings: Settings) -> list[bytes]:
    client = aioredis.from_url(settings.redis_url)
    try:
        return [k async for k in client.scan_iter(match=f"{settings.namespace}:*")]
    finally:
        await client.aclose()


@pytest.mark.parametrize("batch_size", [1, 100])
async def test_amqp_publish_measures_and_deletes_its_queue(
    settings: Settings, batch_size: int
) -> None:
    # Given a queue name under the test's namespace
    name = bench_queue_name(settings)
    assert name.startswith(settings.namespace + ".")
    # When publishing into it for a moment
    m = await measure_amqp_publish(
        settings,
        batch_size=batch_size,
        seconds=TINY,
        max_messages=2_000,
        in_flight=32,
        queue_name=name,
    )
    # Then recipients were counted per message and the queue is gone
    _did_work(m)
    assert m.count == m.operations * batch_size
    assert not await _queue_exists(settings, name)


async def test_amqp_publish_stops_at_its_count_limit(settings: Settings) -> None:
    m = await measure_amqp_publish(
        settings, batch_size=1, seconds=30, max_messages=50, in_flight=16
    )
    assert m.operations == 50


async def test_pg_copy_and_insert(settings: Settings) -> None:
    copy = await measure_pg_copy(settings, seconds=TINY, max_rows=30_000, rows_per_copy=5_000)
    insert = await measure_pg_insert(settings, seconds=TINY, max_rows=2_000)
    _did_work(copy)
    _did_work(insert)
    assert copy.count <= 30_000 and insert.count <= 2_000


async def test_redis_lua_and_pipeline_leave_no_keys(settings: Settings) -> None:
    lua = await measure_redis_lua(settings, seconds=TINY, max_calls=5_000)
    pipeline = await measure_redis_pipeline(
        settings, seconds=TINY, max_commands=20_000, pipeline_size=500
    )
    _did_work(lua)
    _did_work(pipeline)
    assert await _namespace_keys(settings) == []


async def test_http_loopback() -> None:
    m = await measure_http_loopback(seconds=TINY, max_requests=2_000, concurrency=4)
    _did_work(m)


def test_remote_services_are_refused(base_settings: Settings) -> None:
    ensure_local(base_settings)  # the test services are local
    remote = msgspec.structs.replace(base_settings, redis_url="redis://10.1.2.3:6379/0")
    with pytest.raises(NotLocalError, match="HERALD_REDIS_URL"):
        ensure_local(remote)


async def test_run_reports_every_selected_step(settings: Settings) -> None:
    # Given tiny bounds and two groups
    bounds = Bounds(
        seconds=0.1,
        batch_size=10,
        max_messages=500,
        max_batches=100,
        max_lua_calls=500,
        max_pipelined=2_000,
    )
    lines: list[str] = []
    # When the run goes
    report = await run_primitives(
        settings, bounds, groups=("rabbitmq", "redis"), progress=lines.append
    )
    # Then each step has a measurement, a progress line, a table row and a JSON entry
    steps = [m.step for m in report.measurements]
    assert steps == [
        "rabbitmq.publish.single",
        "rabbitmq.publish.batch",
        "redis.lua",
        "redis.pipeline",
    ]
    assert sum(line.startswith("[") for line in lines) == 4
    for m in report.measurements:
        _did_work(m)
    table = format_table(report)
    assert all(step in table for step in steps)
    document = json.loads(report_json(report))
    assert [m["step"] for m in document["measurements"]] == steps
    assert all(m["rate"] > 0 for m in document["measurements"])


def test_bench_primitives_options_are_parsed() -> None:
    args = build_parser().parse_args(
        ["bench", "primitives", "--seconds", "0.5", "--only", "redis,http", "--json"]
    )
    assert (args.benchmark, args.seconds, args.only, args.json) == (
        "primitives",
        0.5,
        ("redis", "http"),
        True,
    )
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "primitives", "--only", "mongodb"])


def test_registration_is_idempotent() -> None:
    benchmarks: dict = {}
    options: dict = {}
    register_benchmarks(benchmarks, options)
    register_benchmarks(benchmarks, options)
    assert list(benchmarks) == list(options)
    assert {"primitives", "campaign", "card", "cases"} <= set(benchmarks)
    parser = argparse.ArgumentParser()
    options["primitives"](parser)
    assert parser.parse_args([]).seconds == 3.0


def test_bench_campaign_options_are_parsed() -> None:
    args = build_parser().parse_args(
        ["bench", "campaign", "--recipients", "5_000_000", "--chain", "email,sms"]
    )
    assert (args.recipients, args.chain, args.workers) == (5_000_000, ["email", "sms"], 2)
    for bad in (["--recipients", "0"], ["--chain", "sms,sms"], ["--chain", "fax"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["bench", "campaign", *bad])


def test_bench_card_options_are_parsed() -> None:
    args = build_parser().parse_args(["bench", "card", "--requests", "500", "--concurrency", "8"])
    assert (args.requests, args.concurrency, args.seed) == (500, 8, 1)
    for bad in (["--requests", "5"], ["--concurrency", "0"], ["--concurrency", "x"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["bench", "card", *bad])


def test_bench_cases_options_are_parsed() -> None:
    args = build_parser().parse_args(["bench", "cases"])
    assert (args.cases, args.open_cases, args.requests, args.concurrency) == (
        10_000_000,
        50_000,
        300,
        4,
    )
    args = build_parser().parse_args(["bench", "cases", "--cases", "20000", "--open-cases", "500"])
    assert (args.cases, args.open_cases) == (20_000, 500)
    for bad in (["--cases", "10"], ["--open-cases", "0"], ["--requests", "x"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["bench", "cases", *bad])


def test_bench_reports_options_are_parsed() -> None:
    args = build_parser().parse_args(["bench", "reports"])
    assert (args.cases, args.runs, args.corrections) == (10_000_000, 20, 1000)
    args = build_parser().parse_args(["bench", "reports", "--cases", "200_000", "--runs", "5"])
    assert (args.cases, args.runs) == (200_000, 5)
    for bad in (["--runs", "1"], ["--cases", "0"], ["--corrections", "x"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["bench", "reports", *bad])


def test_card_percentiles() -> None:
    from herald.cli.bench.card import percentiles

    figures = percentiles([float(n) for n in range(1, 101)])
    assert figures == {"p50": 50.5, "p95": 95.0, "p99": 99.0}
    with pytest.raises(ValueError):
        percentiles([1.0])
