"""Text normalisation shared by keyword rules and duplicate detection."""

from __future__ import annotations

import hashlib
import re

# Apostrophe and quote variants vanish (Мар'яна = Марʼяна = Маряна), as in the
# database's herald_search_norm; anything that is not a letter or digit separates words.
_APOSTROPHES = str.maketrans("", "", "\u02bc\u2019\u2018'`\u00b4")
_NON_WORD = re.compile(r"[\W_]+")


def normalise(text: str) -> str:
    """Case-folded words separated by single spaces, without punctuation or apostrophes."""
    return _NON_WORD.sub(" ", text.translate(_APOSTROPHES).casefold()).strip()


def text_hash(subject: str | None, body: str) -> bytes:
    """SHA-256 of the normalised subject and text: equal for texts that differ only in
    case, spacing and punctuation."""
    return hashlib.sha256(normalise(f"{subject or ''} {body}").encode()).digest()


def contains_any(normalised_text: str, keywords: list[str]) -> bool:
    """Whether any (normalised) keyword occurs in the text; a keyword may be a word stem."""
    padded = f" {normalised_text} "
    return any(f" {k}" in padded for k in keywords if k)
