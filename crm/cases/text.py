"""Text normalisation shared by keyword rules and duplicate detection, and the similarity
of two texts that duplicate detection uses."""

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


def stems(text: str) -> frozenset[str]:
    """The words of a text, crudely stemmed for Ukrainian: words under 3 letters left out
    (не, за, в...), longer ones cut to 5 letters, shorter ones lose their last letter
    (рахунок / рахунку -> рахун, газу -> газ), so that endings do not matter."""
    out = set()
    for word in normalise(text).split():
        if len(word) < 3:
            continue
        out.add(word[:5] if len(word) > 5 else word[: max(3, len(word) - 1)])
    return frozenset(out)


def similarity(a: str, b: str) -> float:
    """How much two texts say the same: the share of the shorter text's stems found in the
    other (1.0 when one says nothing the other does not; 0.0 when either is empty). An
    operator retelling a client's e-mail at the desk keeps its key words, not its length."""
    sa, sb = stems(a), stems(b)
    if not sa or not sb:
        return 0.0
    return len(sa & sb) / min(len(sa), len(sb))
