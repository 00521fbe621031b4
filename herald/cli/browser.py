"""Chromium for the web UI's tests and `herald screenshots`: Debian's build, driven by
Playwright's async API (its own browser download is not used)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path(os.environ.get("HERALD_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--lang=uk-UA",
]
VIEWPORT = {"width": 1440, "height": 900}


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """A headless Chromium; scripts/ensure-services.sh installs it when missing."""
    from playwright.async_api import async_playwright

    if not CHROMIUM.exists():
        raise RuntimeError(
            f"{CHROMIUM} is missing: run scripts/ensure-services.sh (apt-get install chromium)"
        )
    async with async_playwright() as pw:
        # The browser's own locale (date inputs read dd.mm.yyyy, like an operator's Chrome
        # in Ukrainian): on Linux Chromium takes it from the environment, not from --lang,
        # and needs Debian's chromium-l10n for it (scripts/ensure-services.sh).
        env: dict[str, str | float | bool] = {**os.environ, "LANG": "uk_UA.UTF-8", "LANGUAGE": "uk"}
        env.pop("LC_ALL", None)
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, env=env)
        try:
            yield browser
        finally:
            await browser.close()
