"""Report pages over the rollups: who sees which, the figures on them, pickers with errors
next to the field, CSV downloads, channel prices from the page."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from test_reports import NOV, _seed, _users
from ui_helpers import post_form, ui_login

UTC = dt.UTC
pytestmark = pytest.mark.clock(dt.datetime(2026, 12, 7, 10, tzinfo=UTC))
NOV_DATES = {"period": "custom", "from": "2026-11-01", "to": "2026-11-30"}


async def test_report_pages(client, demo_users, app_conn) -> None:
    u1, u2 = await _users(app_conn, demo_users)
    await _seed(app_conn, u1, u2)
    await ui_login(client, "operator_cc")
    home = await client.get("/ui/reports")
    assert home.status == 200 and 'data-page="reports-my"' in await home.text()
    my = await client.get("/ui/reports/my", params=NOV_DATES)
    text = await my.text()
    assert my.status == 200 and 'id="chart-assets"' in text and "data-chart=" in text
    assert 'data-kpi="resolved">3<' in text  # c1, c2, c7
    assert 'href="/ui/reports/team"' not in text
    assert (await client.get("/ui/reports/team")).status == 403
    assert (await client.get("/ui/reports/cases.csv")).status == 403
    mine = await client.get("/ui/reports/operator.csv", params=NOV_DATES)
    rows = list(csv.DictReader(io.StringIO(await mine.text())))
    assert [(r["key"], r["created"]) for r in rows] == [("2026-11-02", "2"), ("2026-11-07", "1")]

    await ui_login(client, "supervisor")
    cases = await client.get("/ui/reports/cases", params={**NOV_DATES, "group_by": "channel"})
    text = await cases.text()
    assert cases.status == 200 and "data-chart=" in text
    assert "<td>Сайт</td>" in text
    team = await client.get("/ui/reports/team", params=NOV_DATES)
    assert (
        team.status == 200
        and 'hx-trigger="herald:cases from:body throttle:5s"' in await team.text()
    )
    bad = await client.get("/ui/reports/cases", params={"period": "custom", "from": "2026-11-05"})
    text = await bad.text()
    assert bad.status == 400 and 'name="to" value="" aria-invalid="true"' in text
    messaging = await client.get("/ui/reports/messaging", params=NOV_DATES)
    assert messaging.status == 200
    assert 'hx-post="/ui/reports/prices"' not in await messaging.text()  # admins set prices

    token = await ui_login(client, "admin")
    saved = await post_form(
        client, "/ui/reports/prices", {"channel": "sms", "price": "0.45"}, token
    )
    assert saved.status == 200 and "0,45" in await saved.text()
    refused = await post_form(
        client, "/ui/reports/prices", {"channel": "sms", "price": "-1"}, token
    )
    assert refused.status == 400
    assert NOV  # the same month as the API tests
