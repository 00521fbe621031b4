"""Languages of the web UI: gettext catalogues (Babel), plural rules, dates and money.

Message ids are English; ``locale/uk/LC_MESSAGES/messages.po`` is the Ukrainian catalogue
(complete: a test fails on any message left untranslated). The compiled ``.mo`` files are
committed beside their ``.po`` (``make catalogues`` rebuilds them; a test fails when a
``.mo`` is older in content than its ``.po``). English needs no catalogue: the ids are
the text.
"""

from __future__ import annotations

import datetime as dt
import gettext
from decimal import Decimal
from pathlib import Path

from babel import dates, numbers

from crm.ui_prefs import DEFAULT_LANGUAGE, LANGUAGES
from herald import clock

LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "messages"
# Babel's locale per UI language: Ukrainian of Ukraine; English as written in Ukraine's
# offices would still show hryvnias and Kyiv time, so only the words change.
BABEL_LOCALE = {"uk": "uk_UA", "en": "en_GB"}
LANGUAGE_NAMES = {"uk": "Українська", "en": "English"}


def translations(language: str) -> gettext.NullTranslations:
    """The catalogue of ``language``; English (the message ids) has none."""
    if language == "en":
        return gettext.NullTranslations()
    return gettext.translation(DOMAIN, localedir=str(LOCALE_DIR), languages=[language])


def normalise(language: str | None) -> str:
    """A supported language, or the default (Ukrainian)."""
    return language if language in LANGUAGES else DEFAULT_LANGUAGE


def from_accept_language(header: str | None) -> str | None:
    """The first supported language a browser's ``Accept-Language`` asks for (by its
    q-values, then its order), or None when it asks for none of ours."""
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate((header or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        primary = tag.strip().split("-")[0].lower()
        if primary in LANGUAGES and q > 0:
            ranked.append((-q, position, primary))
    return min(ranked)[2] if ranked else None


class Formats:
    """Dates, times, numbers and money of one language, always in Kyiv time and UAH."""

    def __init__(self, language: str) -> None:
        self.locale = BABEL_LOCALE[language]

    def datetime(self, value: dt.datetime | None, fmt: str = "short") -> str:
        if value is None:
            return "—"
        if fmt == "short":
            return dates.format_datetime(
                value, "dd.MM.yyyy HH:mm", tzinfo=clock.business_tz(), locale=self.locale
            )
        return dates.format_datetime(value, fmt, tzinfo=clock.business_tz(), locale=self.locale)

    def date(self, value: dt.date | None) -> str:
        if value is None:
            return "—"
        return dates.format_date(value, "dd.MM.yyyy", locale=self.locale)

    def long_date(self, value: dt.date | None) -> str:
        if value is None:
            return "—"
        return dates.format_date(value, "long", locale=self.locale)

    def money(self, value: Decimal | int | float | None) -> str:
        if value is None:
            return "—"
        if self.locale.startswith("en"):
            # "UAH1,234.50" reads badly; hryvnias after the amount, as on a Ukrainian bill
            return numbers.format_currency(value, "UAH", "#,##0.00\xa0¤", locale=self.locale)
        return numbers.format_currency(value, "UAH", locale=self.locale)

    def number(self, value: Decimal | int | float | None) -> str:
        if value is None:
            return "—"
        return numbers.format_decimal(value, locale=self.locale)
