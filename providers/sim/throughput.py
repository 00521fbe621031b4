"""Measures how many messages a second the simulators take: ``python -m providers.sim.throughput``.

Starts ``herald simulators`` as a child process on free ports (one process: one core),
pushes batches through the real adapter (SmsHttpProvider, ViberHttpProvider or
SmtpProvider) from this process, receives the receipts the simulator posts back, and
prints the rate by wall clock and per CPU-second of the simulator process, then the
simulator's own counts. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import msgspec
import uvloop
from aiohttp import web

from providers.base import (
    EmailContent,
    Outbound,
    Outcome,
    Provider,
    SmsContent,
    ViberContent,
)
from providers.sms_http import SmsHttpProvider
from providers.smtp import SmtpProvider
from providers.viber_http import ViberHttpProvider

_TOKEN = "bench-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _message(channel: str, n: int) -> Outbound:
    mid = f"bench:{n:09d}:s1"
    if channel == "sms":
        return Outbound(
            mid,
            "sms",
            f"+38050{n % 10_000_000:07d}",
            SmsContent("Шановний клієнте, борг 123,45 грн. Сплатіть до 20.05."),
        )
    if channel == "viber":
        return Outbound(
            mid,
            "viber",
            f"+38050{n % 10_000_000:07d}",
            ViberContent(
                "Шановний клієнте, борг 123,45 грн.",
                button_text="Сплатити",
                button_url="https://pay.example/abc",
                image_url="https://img.example/x.png",
            ),
        )
    return Outbound(
        mid,
        "email",
        f"client{n}@example.com",
        EmailContent(
            "Рахунок за газ",
            "<p>Шановний клієнте, борг <b>123,45 грн</b>.</p>",
            "Шановний клієнте, борг 123,45 грн.",
        ),
    )


async def _run(args: argparse.Namespace) -> dict[str, object]:
    received = 0

    async def receipts(request: web.Request) -> web.Response:
        nonlocal received
        received += len(msgspec.json.decode(await request.read()))
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/api/v1/providers/{channel}/receipts", receipts)
    runner = web.AppRunner(receiver, access_log=None)
    await runner.setup()
    receiver_port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", receiver_port).start()

    http_port, smtp_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env.update(
        HERALD_SIMULATORS_PORT=str(http_port),
        HERALD_SMTP_PORT=str(smtp_port),
        HERALD_PROVIDER_API_TOKEN=_TOKEN,
        HERALD_LOG_LEVEL="WARNING",
        HERALD_PUBLIC_BASE_URL=f"http://127.0.0.1:{receiver_port}",
    )
    child = subprocess.Popen(
        [sys.executable, "-m", "herald", "simulators"], env=env, stdout=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{http_port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(base + "/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            async with session.put(
                f"{base}/{args.channel}/sim/config",
                json={"delivered_after_ms": 100, "read_after_ms": 300, "read_share": 0.3},
            ) as response:
                assert response.status == 200, await response.text()
            provider: Provider
            if args.channel == "email":
                provider = SmtpProvider(
                    host="127.0.0.1",
                    port=smtp_port,
                    sender="Herald <no-reply@herald.local>",
                    pool_size=args.concurrency,
                    max_batch=args.batch,
                )
            elif args.channel == "viber":
                provider = ViberHttpProvider(
                    base_url=f"{base}/viber", token=_TOKEN, max_batch=args.batch
                )
            else:
                provider = SmsHttpProvider(
                    base_url=f"{base}/sms", token=_TOKEN, max_batch=args.batch
                )
            outcome = await _push(provider, args, child.pid)
            await provider.aclose()
            deadline = time.monotonic() + 10
            while received < outcome["accepted"] and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            async with session.get(f"{base}/{args.channel}/sim/stats") as response:
                stats = await response.json()
    finally:
        child.terminate()
        child.wait(10)
        await runner.cleanup()
    return {**outcome, "receipts_received": received, "sim_stats": stats}


async def _push(provider: Provider, args: argparse.Namespace, sim_pid: int) -> dict[str, Any]:
    total, batch_size = args.messages, args.batch
    next_batch = iter(range(0, total, batch_size))
    sent = accepted = 0

    async def worker() -> None:
        nonlocal sent, accepted
        for start in next_batch:
            batch: Sequence[Outbound] = [
                _message(args.channel, n) for n in range(start, min(total, start + batch_size))
            ]
            results = await provider.send(batch)
            sent += len(results)
            accepted += sum(r.outcome is Outcome.ACCEPTED for r in results)

    async def progress() -> None:
        while True:
            await asyncio.sleep(1)
            elapsed = time.monotonic() - began
            print(f"  {sent:>10,} sent  {sent / elapsed:>10,.0f}/s", file=sys.stderr, flush=True)

    cpu_before = _cpu_seconds(sim_pid)
    client_before = time.process_time()
    began = time.monotonic()
    reporter = asyncio.create_task(progress())
    http_workers = args.concurrency if args.channel != "email" else 1
    await asyncio.gather(*(worker() for _ in range(http_workers)))
    seconds = time.monotonic() - began
    reporter.cancel()
    sim_cpu = _cpu_seconds(sim_pid) - cpu_before
    client_cpu = time.process_time() - client_before
    return {
        "channel": args.channel,
        "messages": sent,
        "accepted": accepted,
        "batch": batch_size,
        "concurrency": args.concurrency,
        "seconds": round(seconds, 2),
        "rate_per_s": round(sent / seconds),
        "sim_cpu_seconds": round(sim_cpu, 2),
        "per_sim_cpu_second": round(sent / sim_cpu) if sim_cpu else None,
        # The sending side (adapter + receipt receiver) shares this process.
        "client_cpu_seconds": round(client_cpu, 2),
        "per_client_cpu_second": round(sent / client_cpu) if client_cpu else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m providers.sim.throughput",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("--channel", choices=("sms", "viber", "email"), default="sms")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=4,
        help="requests in flight (HTTP) or SMTP connections (email)",
    )
    args = parser.parse_args(argv)
    result = uvloop.run(_run(args))
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
