"""Search words as the database compares them: normalised text, and a word's start.

``search_norm`` is the Python twin of the database's ``herald_search_norm`` (migration
0001); ``word_start_pattern`` is the PostgreSQL regular expression crm.search gives the
trigram indexes, and ``starts_a_word`` its Python twin (tests check that each pair
agrees).
"""

from __future__ import annotations

import re

# The characters herald_search_norm (migration 0001) removes: apostrophe and quote variants.
_REMOVED = dict.fromkeys(map(ord, "\u02BC\u2019\u2018'`\u00B4\u201C\u201D\u00AB\u00BB\""))
_SPACES = re.compile(r"\s+")
# A word starts the text or follows a space or a hyphen (Іванова-Петренко). pg_trgm pads
# the words it indexes, so the padded trigrams of such a pattern (" 53") are in the
# index. The class stays this small on purpose: for a wide one ("not a letter or digit")
# pg_trgm drops the padded trigrams to keep its graph small, and "53" then selects
# nothing.
_WORD_START = "(^|[ -])"
_WORD_BREAKS = " -"


def search_norm(text: str) -> str:
    """The Python twin of the database's herald_search_norm (case, apostrophes, spaces)."""
    return _SPACES.sub(" ", text.translate(_REMOVED).lower()).strip(" ")


def word_start_pattern(word: str) -> str:
    """A PostgreSQL regular expression: ``word`` at the start of a word.

    Every character that is not a letter or digit is escaped (in PostgreSQL's regular
    expressions a backslash before one stands for the character itself).
    """
    return _WORD_START + "".join(ch if ch.isalnum() else "\\" + ch for ch in word)


def starts_a_word(word: str, text: str) -> bool:
    """The Python twin of ``word_start_pattern``: ``word`` starts a word of ``text``."""
    at = text.find(word)
    while at >= 0:
        if at == 0 or text[at - 1] in _WORD_BREAKS:
            return True
        at = text.find(word, at + 1)
    return False
