"""Identifiers for the seeder: unique by construction, each derived from a row id.

Account numbers, EIC codes, phone numbers and meter serials must never repeat, so they
are not drawn at random: each is a bijection (a keyed permutation) of the row id onto
the code space, which makes uniqueness a property of the arithmetic rather than of luck,
and keeps chunks generated in different processes from ever colliding.
"""

from __future__ import annotations

import hashlib
import math
import random
from datetime import date
from typing import Final

EIC_ALPHABET: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-"
_EIC_VALUE: Final = {ch: i for i, ch in enumerate(EIC_ALPHABET)}

# Ukrainian mobile operator codes (+380 XX): Kyivstar 67 68 96 97 98, Vodafone 50 66 95 99,
# lifecell 63 73 93. A uniform spread over codes gives Kyivstar ~42 %, Vodafone ~33 %,
# lifecell ~25 %, close to the operators' real subscriber shares.
MOBILE_CODES: Final = ("67", "68", "96", "97", "98", "50", "66", "95", "99", "63", "73", "93")
_SUBSCRIBERS: Final = 10_000_000  # 7-digit subscriber numbers per operator code

TAX_EPOCH: Final = date(1899, 12, 31)  # day 0 of the RNOKPP birth-date field
_TAX_WEIGHTS: Final = (-1, 5, 7, 9, 4, 6, 10, 5, 7)


def derive_seed(*parts: object) -> int:
    """A 128-bit RNG seed that depends only on ``parts`` (stable across runs and platforms)."""
    text = ":".join(str(p) for p in ("herald-seed", *parts))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=16).digest(), "big")


class Permutation:
    """A keyed bijection of ``range(high * low)`` onto itself, cheap enough for per-row use.

    An affine map spreads consecutive ids over the whole space; three Feistel-like rounds
    (each half shifted by a table keyed on the other half, so every round is invertible)
    hide the arithmetic progression an affine map alone would leave.
    """

    __slots__ = ("_add", "_high", "_k1", "_k2", "_k3", "_low", "_mult", "_size")

    def __init__(self, high: int, low: int, key: int) -> None:
        rng = random.Random(key)
        self._high, self._low = high, low
        self._size = size = high * low
        mult = rng.randrange(size // 3, 2 * size // 3) | 1
        while math.gcd(mult, size) != 1:
            mult += 2
        self._mult, self._add = mult, rng.randrange(size)
        self._k1 = [rng.randrange(low) for _ in range(1024)]
        self._k2 = [rng.randrange(high) for _ in range(1024)]
        self._k3 = [rng.randrange(low) for _ in range(1024)]

    @property
    def size(self) -> int:
        """How many distinct values the permutation maps (ids must stay below it)."""
        return self._size

    def __call__(self, x: int) -> int:
        h, lo = divmod((x * self._mult + self._add) % self._size, self._low)
        lo = (lo + self._k1[h & 1023]) % self._low
        h = (h + self._k2[lo & 1023]) % self._high
        lo = (lo + self._k3[h & 1023]) % self._low
        return h * self._low + lo


def eic_check_char(body: str) -> str:
    """The ENTSO-E check character of the first 15 characters of an EIC code.

    Each character's value (0-9, A-Z = 10-35, '-' = 36) is weighted 16 down to 2;
    the check is ``36 - (sum - 1) mod 37`` mapped back to the alphabet. A result of
    '-' (value 36) is not allowed as a check character.
    """
    total = sum((16 - i) * _EIC_VALUE[ch] for i, ch in enumerate(body[:15]))
    return EIC_ALPHABET[36 - (total - 1) % 37]


def _digit_weights(weights: tuple[int, ...]) -> list[int]:
    """Weighted digit sums of every number of len(weights) digits, indexed by the number."""
    width = len(weights)
    return [
        sum(w * int(d) for w, d in zip(weights, f"{n:0{width}d}", strict=True))
        for n in range(10**width)
    ]


# Per-row check digits come from these tables (three lookups) instead of a digit loop.
_EIC_PREFIX: Final = sum((16 - i) * _EIC_VALUE[ch] for i, ch in enumerate("56XG"))
_EIC_HIGH: Final = _digit_weights((12, 11, 10, 9))  # digits at positions 4-7
_EIC_MID: Final = _digit_weights((8, 7, 6, 5))  # 8-11
_EIC_LOW: Final = _digit_weights((4, 3, 2))  # 12-14
_TAX_DAY_HIGH: Final = _digit_weights((-1, 5, 7))  # birth-day digits 1-3
_TAX_DAY_LOW: Final = _digit_weights((9, 4))  # 4-5
_TAX_SERIAL: Final = _digit_weights((6, 10, 5))  # 6-8


def eic_code(number: int) -> str:
    """A gas EIC code (``56X...``, 16 characters) unique for each ``number`` < 10**11.

    56 is the Ukrainian gas issuing office, X the object type the brief asks for; the
    fourth character is G, or H for the 1 in 37 numbers whose check would be '-'.
    """
    total = (
        _EIC_PREFIX
        + _EIC_HIGH[number // 10_000_000]
        + _EIC_MID[number // 1000 % 10_000]
        + _EIC_LOW[number % 1000]
    )
    check = 36 - (total - 1) % 37
    if check == 36:  # '-' may not be a check character
        # H instead of G adds 13 to the weighted sum, never a multiple of 37.
        return f"56XH{number:011d}{EIC_ALPHABET[36 - (total + 13 - 1) % 37]}"
    return f"56XG{number:011d}{EIC_ALPHABET[check]}"


def mobile_phone(number: int) -> str:
    """A Ukrainian mobile number in E.164 (+380XXYYYYYYY), one per ``number`` < 12 * 10**7."""
    code, subscriber = divmod(number, _SUBSCRIBERS)
    return f"+380{MOBILE_CODES[code]}{subscriber:07d}"


def tax_day(birth: date) -> int:
    """The birth-date field of an RNOKPP: days since 31.12.1899."""
    return (birth - TAX_EPOCH).days


def tax_id(birth_day: int, serial: int, male: bool) -> str:
    """An RNOKPP (individual tax number) for a person born ``birth_day`` days after 31.12.1899.

    Digits 1-5 are that day count, 6-8 a serial, the 9th is odd for men and even for
    women, the 10th a weighted check digit. ``serial`` is 0..4999.
    """
    triple, last = divmod(serial, 5)
    ninth = 2 * last + (1 if male else 0)
    check = (
        (
            _TAX_DAY_HIGH[birth_day // 100]
            + _TAX_DAY_LOW[birth_day % 100]
            + _TAX_SERIAL[triple]
            + 7 * ninth
        )
        % 11
        % 10
    )
    return f"{birth_day:05d}{triple:03d}{ninth}{check}"


def tax_id_valid(value: str) -> bool:
    """Whether a 10-digit RNOKPP has a correct check digit."""
    if len(value) != 10 or not value.isdigit():
        return False
    return sum(w * int(d) for w, d in zip(_TAX_WEIGHTS, value[:9], strict=True)) % 11 % 10 == int(
        value[9]
    )
