"""Search words as the database compares them: normalised text, a word's start, search keys.

``search_norm`` is the Python twin of the database's ``herald_search_norm`` (migration
0001); ``word_start_pattern`` is the PostgreSQL regular expression crm.search checks the
rows found with, and ``starts_a_word`` its Python twin; ``search_keys`` is the twin of
``herald_search_keys`` (migration 0029), which the seeder uses to write the keys itself
(tests check that each pair agrees).
"""

from __future__ import annotations

import functools
import hashlib
import re

# The characters herald_search_norm (migration 0001) removes: apostrophe and quote variants.
_REMOVED = dict.fromkeys(map(ord, "\u02bc\u2019\u2018'`\u00b4\u201c\u201d\u00ab\u00bb\""))
_SPACES = re.compile(r"\s+")
# A word starts the text or follows a space or a hyphen (Іванова-Петренко); the keys of
# migration 0029 split words at the same two characters.
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


# Search keys (migration 0029): the words of a name (tag "n") or an address (tag "a"),
# split at spaces and hyphens, each contributing its prefixes of 1 to KEY_MAX letters; a
# key is the first 32 bits of md5(tag || prefix).
KEY_MAX = 8
NAME_TAG = "n"
ADDRESS_TAG = "a"
_PARTS = re.compile(r"[ -]")


@functools.lru_cache(maxsize=1 << 16)
def _key(text: str) -> int:
    return int.from_bytes(hashlib.md5(text.encode()).digest()[:4], "big", signed=True)


@functools.lru_cache(maxsize=1 << 16)
def _part_keys(part: str, tag: str) -> tuple[int, ...]:
    return tuple(_key(tag + part[:n]) for n in range(1, min(len(part), KEY_MAX) + 1))


def search_keys(norm: str | None, tag: str) -> set[int]:
    """The Python twin of the database's herald_search_keys (migration 0029)."""
    keys: set[int] = set()
    for part in _PARTS.split(norm or ""):
        keys.update(_part_keys(part, tag))
    return keys


def client_search_keys(name_norm: str, addresses_norm: list[str]) -> list[int]:
    """The Python twin of herald_client_search_keys: the name's keys ascending, then the
    addresses' keys ascending."""
    return sorted(search_keys(name_norm, NAME_TAG)) + sorted(
        search_keys(" ".join(addresses_norm), ADDRESS_TAG)
    )


def query_keys(word: str, tag: str) -> list[int]:
    """The keys a row must have for ``word`` (normalised) to start one of its words.

    Each hyphen-separated part of the word gives the key of its first KEY_MAX letters.
    An abbreviation ("вул.", "м.") gives the key of its letters: a word of the row
    starts with them (and crm.search checks that the abbreviation occurs).
    """
    letters = word[:-1] if word.endswith(".") else word
    return [_key(tag + part[:KEY_MAX]) for part in letters.split("-") if part]
