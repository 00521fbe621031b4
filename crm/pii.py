"""Personal data shown only to roles with ``clients.pii``: one rule for the card, contacts
and the audit journal."""

from __future__ import annotations

import re
from typing import Any

PERMISSION = "clients.pii"
"""The permission that shows passport numbers and tax ids unmasked."""

FIELDS = frozenset({"passport_number", "tax_id"})
"""Fields (of clients and contacts, and of their journal entries) masked without it."""


def mask(value: str | None) -> str | None:
    """All but the first two and last two characters hidden: ``КА 123456`` -> ``КА****56``."""
    if value is None:
        return None
    compact = re.sub(r"\s+", "", value)
    if len(compact) <= 4:
        return "*" * len(compact)
    return compact[:2] + "*" * (len(compact) - 4) + compact[-2:]


def mask_value(field: str | None, value: Any) -> Any:
    """A journal value of ``field`` as a role without the permission may see it.

    A whole record (a dict, as in a creation) has its personal fields masked one by one.
    """
    if field in FIELDS:
        return mask(value) if isinstance(value, str) else None if value is None else "****"
    if isinstance(value, dict):
        return {k: mask_value(k, v) for k, v in value.items()}
    return value
