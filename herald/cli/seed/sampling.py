"""Sampling and calendar helpers shared by the seeder's row generators.

Everything here is precomputed once per process, so the per-row code only indexes
lists: a weighted pick is ``table[int(random() * len(table))]`` and a date is
``DAY[ordinal]``, both far cheaper than ``random.choices`` or ``date.isoformat``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from typing import Final, TypeVar

T = TypeVar("T")

# The seeded world is as of this day, not as of the day it is seeded: the data must be
# identical whenever it is generated. Ages, debts and meter verification are relative to it.
AS_OF: Final = date(2026, 11, 1)

DAY0: Final = date(1900, 1, 1)
_LAST_DAY: Final = AS_OF + timedelta(days=12 * 366)  # meter verification runs years ahead
# DAY[n] is the ISO text of DAY0 + n days; COPY takes dates and timestamps as text.
DAY: Final[list[str]] = [
    (DAY0 + timedelta(days=n)).isoformat() for n in range((_LAST_DAY - DAY0).days + 1)
]
AS_OF_DAY: Final = (AS_OF - DAY0).days
# CLOCK[s] completes DAY[d] into the COPY text of a UTC timestamp at second s of the day:
# ``DAY[d] + CLOCK[s]``, inlined in the generators because it runs ten times per client.
CLOCK: Final[list[str]] = [
    f" {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}+00" for s in range(86_400)
]


def day_number(d: date) -> int:
    """The index of ``d`` in ``DAY``."""
    return (d - DAY0).days


def weighted_table(pairs: Iterable[tuple[T, float]], resolution: int = 10_000) -> list[T]:
    """A lookup list in which each item appears in proportion to its weight.

    Picking ``table[int(random() * len(table))]`` is a weighted choice; every item with
    a positive weight gets at least one slot, so rare categories never vanish.
    """
    items = [(item, float(w)) for item, w in pairs if w > 0]
    if not items:
        raise ValueError("weighted_table needs at least one positive weight")
    total = sum(w for _, w in items)
    table: list[T] = []
    for item, w in items:
        table.extend([item] * max(1, round(w / total * resolution)))
    return table


def cumulative(weights: Sequence[float]) -> list[float]:
    """Running sums of ``weights``, for ``bisect`` picks over long or skewed lists."""
    out: list[float] = []
    total = 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


def cents(value: int) -> str:
    """COPY text of a money amount given in kopecks (``-1234`` -> ``-12.34``)."""
    # Exact: a kopeck count below 2**53 / 100 divided by 100 rounds back to its 2 decimals.
    return f"{value / 100:.2f}"
