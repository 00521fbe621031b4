"""SMS text arithmetic: GSM-7 or UCS-2, how many segments a text costs, and Latin transliteration.

Segment rules (3GPP TS 23.038 / 23.040): a text that fits the GSM-7 default alphabet
plus its extension table is sent in septets, 160 in one SMS or 153 per part of a
concatenated one; an extension character (``€ [ ] { } \\ ^ ~ |`` and form feed) costs
two septets and is never split across parts. Anything else makes the whole text UCS-2:
UTF-16 code units, 70 in one SMS or 67 per part, a surrogate pair (emoji) costs two
units and is kept whole within a part, as handsets and most gateways do.

Transliteration produces Latin text for gateways or handsets that cannot take Cyrillic
or Georgian: Ukrainian by the national system of 2010 (Cabinet of Ministers resolution
No. 55), Georgian by the national system of 2002. Typographic punctuation that is not
in GSM-7 (« » ’ – … № and no-break spaces) is folded to plain ASCII as well, so a
transliterated Ukrainian SMS usually becomes GSM-7 and costs less than half as much.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal, NamedTuple

Encoding = Literal["gsm7", "ucs2"]
TransliterationTable = Literal["uk", "ka"]

_GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = "\f^{}\\[~]|€"
_NOT_GSM7 = re.compile("[^" + re.escape(_GSM7_BASIC + _GSM7_EXTENSION) + "]")
_EXTENSION_SET = frozenset(_GSM7_EXTENSION)

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


class SmsStats(NamedTuple):
    """What an SMS text costs: its encoding, its length in that encoding's units, its segments.

    ``characters`` counts septets for GSM-7 (an extension character counts 2) and UTF-16
    code units for UCS-2 (an emoji outside the Basic Multilingual Plane counts 2), which
    is what operators bill and what a "characters left" counter should show. An empty
    text is 0 characters in 0 segments.
    """

    encoding: Encoding
    characters: int
    segments: int


def is_gsm7(text: str) -> bool:
    """Tell whether ``text`` can be sent in the GSM-7 alphabet (with its extension table)."""
    return _NOT_GSM7.search(text) is None


def sms_stats(text: str) -> SmsStats:
    """Count the encoding, characters and segments an SMS with this exact text will take."""
    if _NOT_GSM7.search(text) is None:
        extended = sum(text.count(c) for c in _GSM7_EXTENSION)
        septets = len(text) + extended
        if septets <= GSM7_SINGLE:
            return SmsStats("gsm7", septets, 1 if septets else 0)
        if not extended:
            return SmsStats("gsm7", septets, -(-septets // GSM7_PART))
        sizes = (2 if c in _EXTENSION_SET else 1 for c in text)
        return SmsStats("gsm7", septets, _pack(sizes, GSM7_PART))
    units = len(text.encode("utf-16-le")) // 2
    if units <= UCS2_SINGLE:
        return SmsStats("ucs2", units, 1)
    if units == len(text):
        return SmsStats("ucs2", units, -(-units // UCS2_PART))
    sizes = (2 if ord(c) > 0xFFFF else 1 for c in text)
    return SmsStats("ucs2", units, _pack(sizes, UCS2_PART))


def _pack(sizes: Iterable[int], per_part: int) -> int:
    """Count parts when two-unit characters may not straddle a part boundary."""
    parts, used = 1, 0
    for size in sizes:
        if used + size > per_part:
            parts += 1
            used = size
        else:
            used += size
    return parts


# --- transliteration -----------------------------------------------------------------

# Ukrainian national system (CMU resolution No. 55 of 27.01.2010): lower-case forms.
# Russian-only letters (ё ъ ы э) are not in the resolution; they get the nearest
# Ukrainian reading so a Russian-spelled name in billing data still comes out Latin.
_UK = {
    "а": "a",
    "б": "b",
    "в": "v",
    "г": "h",
    "ґ": "g",
    "д": "d",
    "е": "e",
    "є": "ie",
    "ж": "zh",
    "з": "z",
    "и": "y",
    "і": "i",
    "ї": "i",
    "й": "i",
    "к": "k",
    "л": "l",
    "м": "m",
    "н": "n",
    "о": "o",
    "п": "p",
    "р": "r",
    "с": "s",
    "т": "t",
    "у": "u",
    "ф": "f",
    "х": "kh",
    "ц": "ts",
    "ч": "ch",
    "ш": "sh",
    "щ": "shch",
    "ь": "",
    "ю": "iu",
    "я": "ia",
    "ё": "io",
    "ъ": "",
    "ы": "y",
    "э": "e",
}
# At the start of a word these letters take a "Y" form (Yevhen, Yizhak, Yosyp, Yurii, Yana).
_UK_INITIAL = {"є": "ye", "ї": "yi", "й": "y", "ю": "yu", "я": "ya", "ё": "yo"}

_PUNCTUATION = {
    "«": '"',
    "»": '"',
    "„": '"',
    "“": '"',
    "”": '"',
    "″": '"',
    "‘": "'",
    "’": "'",
    "ʼ": "'",
    "′": "'",
    "`": "'",
    "‐": "-",
    "‑": "-",
    "‒": "-",
    "–": "-",
    "—": "-",
    "―": "-",
    "−": "-",
    "…": "...",
    "№": "No",
    "₴": "UAH",
    "•": "-",
    "\u00a0": " ",
    "\u2007": " ",
    "\u2009": " ",
    "\u202f": " ",
    "\u200b": "",
    "\u200c": "",
    "\u200d": "",
    "\ufeff": "",
}


def _title_table(lower: dict[str, str]) -> dict[int, str]:
    table = {ord(k): v for k, v in lower.items()}
    table.update({ord(k.upper()): v.capitalize() for k, v in lower.items() if k.upper() != k})
    table.update({ord(k): v for k, v in _PUNCTUATION.items()})
    return table


_UK_TABLE = _title_table(_UK)

_UK_LETTERS = "А-ЯЁЄІЇҐа-яёєіїґ"
_UK_UPPER = "А-ЯЁЄІЇҐ"
_APOSTROPHES = "'ʼ’‘`"
_MULTI = "ЖХЦЧШЩЄЇЮЯЁ"  # upper-case letters whose Latin form has several letters
_YOTATED = "ЄЇЙЮЯЁєїйюяё"
# Every branch starts with its own letter class (context is checked after it) so that
# the regex engine can skip ahead to candidate letters instead of trying each position.
_UK_SPECIAL = re.compile(
    rf"(?P<zg>[Зз][Гг])"
    rf"|(?P<apostrophe>[{_APOSTROPHES}](?<=[{_UK_LETTERS}].)(?=[{_UK_LETTERS}]))"
    rf"|(?P<initial>[{_YOTATED}](?<![{_UK_LETTERS}].)(?<![{_UK_LETTERS}][{_APOSTROPHES}].))"
    rf"|(?P<caps>[{_MULTI}](?:(?=[{_APOSTROPHES}]?[{_UK_UPPER}])"
    rf"|(?<=[{_UK_UPPER}].)|(?<=[{_UK_UPPER}][{_APOSTROPHES}].)))"
)


def _uk_special(match: re.Match[str]) -> str:
    """Transliterate the context-dependent spots: зг, apostrophes, word-initial Є Ї Й Ю Я, CAPS."""
    kind, found = match.lastgroup, match.group()
    if kind == "apostrophe":
        return ""
    if kind == "zg":
        # "зг" is "zgh", so that it is never read as "zh" (Zghorany, Rozghon).
        if found[0] == "З":
            return "ZGH" if found[1] == "Г" else "Zgh"
        return "zGh" if found[1] == "Г" else "zgh"
    if kind == "initial":
        latin = _UK_INITIAL[found.lower()]
        if found.islower():
            return latin
        following = match.string[match.end() : match.end() + 1]
        return latin.upper() if following.isupper() else latin.capitalize()
    return _UK[found.lower()].upper()  # a multi-letter letter inside an upper-case word


_KA = {
    "ა": "a",
    "ბ": "b",
    "გ": "g",
    "დ": "d",
    "ე": "e",
    "ვ": "v",
    "ზ": "z",
    "თ": "t",
    "ი": "i",
    "კ": "k'",
    "ლ": "l",
    "მ": "m",
    "ნ": "n",
    "ო": "o",
    "პ": "p'",
    "ჟ": "zh",
    "რ": "r",
    "ს": "s",
    "ტ": "t'",
    "უ": "u",
    "ფ": "p",
    "ქ": "k",
    "ღ": "gh",
    "ყ": "q'",
    "შ": "sh",
    "ჩ": "ch",
    "ც": "ts",
    "ძ": "dz",
    "წ": "ts'",
    "ჭ": "ch'",
    "ხ": "kh",
    "ჯ": "j",
    "ჰ": "h",
}
_MTAVRULI_OFFSET = 0x1C90 - 0x10D0  # Mtavruli capitals mirror Mkhedruli letter by letter


def _ka_table() -> dict[int, str]:
    table = {ord(k): v for k, v in _KA.items()}
    # Mtavruli is written in whole words, as capitals are in Latin: "ᲗᲑᲘᲚᲘᲡᲘ" -> "TBILISI".
    table.update({ord(k) + _MTAVRULI_OFFSET: v.upper() for k, v in _KA.items()})
    table.update({ord(k): v for k, v in _PUNCTUATION.items()})
    return table


_KA_TABLE = _ka_table()


def transliterate(text: str, table: TransliterationTable = "uk") -> str:
    """Rewrite Ukrainian (``"uk"``) or Georgian (``"ka"``) text in Latin letters for SMS gateways.

    ``"uk"``: the 2010 national system: "Згорани" -> "Zghorany", "Юрій" -> "Yurii",
    "Знам'янка" -> "Znamianka"; all-capital words stay all-capital ("ЩУКА" -> "SHCHUKA").
    ``"ka"``: the 2002 national system, ejectives with an apostrophe ("ჭიანჭველა" ->
    "ch'ianch'vela"); Georgian has no case, so output is lower case except Mtavruli.
    Both fold typographic punctuation and no-break spaces to ASCII; other characters
    (Latin, digits, emoji) pass through unchanged.
    """
    if table == "uk":
        return _UK_SPECIAL.sub(_uk_special, text).translate(_UK_TABLE)
    if table == "ka":
        return text.translate(_KA_TABLE)
    raise ValueError(f"unknown transliteration table {table!r}; expected 'uk' or 'ka'")
