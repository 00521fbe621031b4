"""`herald bench ui`: the web UI's own figures on the configured (demo or 13 M) database.

- server time of the card page and of the search results fragment (p50/p95/p99 ms,
  sequential requests over HTTP to an in-process API, logged in as operator_cc);
- ringing -> card visible (``call_to_card_ms``, p50/p95/p99 over ``--calls`` rings): a
  VICIdial ``ringing`` event posted to the API until the identified client's card is on
  the screen of a logged-in operator's Chromium tab;
- first-visit JavaScript + CSS, in KB (what the login page and the first page load).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from herald.cli.demo import DEMO_USERS
from herald.settings import Settings


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--requests", type=int, default=200, help="card and search requests each (default 200)"
    )
    parser.add_argument("--calls", type=int, default=50, help="rings measured (default 50)")


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    if len(ordered) < 2:
        raise ValueError("percentiles need at least two samples")
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "p50": round(q[49], 1),
        "p95": round(q[94], 1),
        "p99": round(q[98], 1),
        "n": len(ordered),
    }


def _user(role: str) -> Any:
    return next(d for d in DEMO_USERS if d.role == role)


async def _timed(http: Any, url: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        async with http.get(url) as response:
            await response.read()
            assert response.status == 200, (url, response.status)
        out.append((time.perf_counter() - start) * 1000)
    return out


async def main(settings: Settings, args: argparse.Namespace) -> int:
    """Measure and print the JSON report (progress on stderr)."""
    if args.calls < 2 or args.requests < 2:
        print(
            "herald bench ui: --calls and --requests need at least 2 (percentiles)", file=sys.stderr
        )
        return 2
    # Imported when run: `herald` imports this module to build its parser (keeps it quick).
    import aiohttp
    import asyncpg

    from crm.users import PasswordPolicy
    from herald.cli import screenshots
    from herald.cli.browser import VIEWPORT, chromium
    from herald.cli.demo import ensure_demo_users
    from herald.db import init_connection

    conn = await asyncpg.connect(settings.database_url)
    await init_connection(conn)
    try:
        await ensure_demo_users(conn, PasswordPolicy(settings.password_min_length))
        rows = await conn.fetch(
            "SELECT c.id, c.last_name, ct.phone FROM contacts ct JOIN clients c ON c.id = ct.client_id "
            "WHERE ct.is_active AND ct.phone IS NOT NULL ORDER BY ct.id LIMIT 200"
        )
        accounts = await conn.fetchval("SELECT count(*) FROM accounts")
    finally:
        await conn.close()
    if not rows:
        print("herald bench ui: no demo clients; run `herald up` first", file=sys.stderr)
        return 2
    report: dict[str, Any] = {"accounts": accounts}
    async with screenshots.serving(settings) as url:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            user = _user("operator_cc")
            async with http.post(
                url + "/ui/login",
                data={"login": user.login, "password": user.password},
                headers={"Origin": url},
                allow_redirects=False,
            ) as response:
                assert response.status == 303, await response.text()
            print("card page…", file=sys.stderr, flush=True)
            card: list[float] = []
            search: list[float] = []
            for i in range(args.requests):
                row = rows[i % len(rows)]
                card += await _timed(http, f"{url}/ui/clients/{row['id']}", 1)
                search += await _timed(http, f"{url}/ui/search/results?q={row['last_name']}", 1)
            report["card_page_ms"] = _percentiles(card)
            report["search_page_ms"] = _percentiles(search)
        print("ringing -> card in Chromium…", file=sys.stderr, flush=True)
        async with chromium() as browser, aiohttp.ClientSession() as api:
            context = await browser.new_context(viewport=VIEWPORT)
            page = await context.new_page()
            sizes: dict[str, int] = {}

            async def on_response(response: Any) -> None:
                if response.url.split("?")[0].endswith((".js", ".css")):
                    sizes[response.url] = len(await response.body())

            page.on("response", on_response)
            await screenshots.log_in(page, url, "operator_cc")
            await page.wait_for_selector("#live-state.on")
            report["first_visit_kb"] = round(sum(sizes.values()) / 1024, 1)
            integration = _user("integration")
            async with api.post(
                url + "/api/v1/auth/login",
                json={"login": integration.login, "password": integration.password},
            ) as r:
                token = (await r.json())["token"]
            rings = []
            for n in range(args.calls):
                row = rows[n % len(rows)]
                await page.goto(url + "/ui/search")
                await page.wait_for_selector("#live-state.on")
                start = time.perf_counter()
                await api.post(
                    url + "/api/v1/cti/calls",
                    headers={"Authorization": f"Bearer {token}"},
                    json={
                        "event": "ringing",
                        "call_id": f"BENCH{time.time_ns()}",
                        "phone_number": row["phone"],
                        "user": "operator.cc",
                    },
                )
                await page.wait_for_selector("#client-id, .call-candidates")
                rings.append((time.perf_counter() - start) * 1000)
            report["call_to_card_ms"] = _percentiles(rings)
            await context.close()
    # The last line: one JSON object (the fields), for scripts and the issue note.
    print(json.dumps(report, ensure_ascii=False))
    return 0
