"""Exporting the case list in the browser (SR-13): the filtered list as CSV at once, the
whole list as XLSX through a background job on "My exports"."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import openpyxl
import pytest
from playwright.async_api import Page, expect
from test_exports import _seed_cases
from test_ui_browser import base, log_in

from herald.cli.browser import VIEWPORT, chromium

TIMEOUT = 15_000


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    async with chromium() as found:
        yield found


@pytest.fixture
async def export_client(settings, aiohttp_client, demo_users, tmp_path: Path):
    from admin_api.app import init_app

    tuned = msgspec.structs.replace(
        settings,
        export_dir=str(tmp_path / "exports"),
        export_background_rows=5,
        export_sheet_rows=4,
    )
    return await aiohttp_client(init_app(tuned))


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport=VIEWPORT, locale="uk-UA", accept_downloads=True)
    context.set_default_timeout(TIMEOUT)
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda e: errors.append(str(e)))
    yield opened
    await context.close()
    assert errors == []


async def test_the_case_list_exports_as_csv_at_once_and_as_xlsx_in_the_background(
    export_client, admin_conn, page: Page, tmp_path: Path
) -> None:
    # Given 9 open cases, 3 of them by phone
    await _seed_cases(admin_conn, 9)
    url = base(export_client)
    await log_in(page, url, "operator_cc")
    await page.goto(url + "/ui/cases")

    # When the operator filters the calls and presses CSV
    await page.select_option("select[name=channel]", "call")
    await expect(page.locator("#case-rows tr.case-row")).to_have_count(3)
    shown = await page.locator("#case-rows tr.case-row").evaluate_all(
        "rows => rows.map(r => r.dataset.caseId)"
    )
    async with page.expect_download() as pending:
        await page.click("form[data-export=cases] button[value=csv]")
    download = await pending.value
    saved = tmp_path / "cases.csv"
    await download.save_as(saved)

    # Then the file holds exactly the rows shown, in their order
    rows = list(csv.reader(io.StringIO(saved.read_text("utf-8-sig"), newline="")))
    assert [r[0] for r in rows[1:]] == shown
    assert {r[2] for r in rows[1:]} == {"call"}

    # When the whole list (over the background threshold) is exported as XLSX
    await page.select_option("select[name=channel]", "")
    await expect(page.locator("#case-rows tr.case-row")).to_have_count(9)
    await page.click("form[data-export=cases] button[value=xlsx]")

    # Then "My exports" shows the job until it is ready, then its download link
    await page.wait_for_url(re.compile(r".*/ui/exports#export-\d+$"))
    await expect(page.locator("h1")).to_have_text("Мої вивантаження")
    ready = page.locator("tr[data-status=done] a[data-download]")
    await expect(ready).to_have_count(1)
    async with page.expect_download() as pending:
        await ready.click()
    book_path = tmp_path / "cases.xlsx"
    await (await pending.value).save_as(book_path)
    book = openpyxl.load_workbook(book_path, read_only=True)
    sheets = [list(s.iter_rows(values_only=True)) for s in book.worksheets]
    book.close()
    assert len(sheets) == 3  # 9 rows, 3 to a sheet
    assert sum(len(s) - 1 for s in sheets) == 9
