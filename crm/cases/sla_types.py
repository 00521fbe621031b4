"""The SLA block every case read carries (kept apart so types.py need not grow)."""

from __future__ import annotations

import datetime as dt

import msgspec


class SlaTargetState(msgspec.Struct):
    """One target: ``remaining_seconds`` is business time left (negative when overdue;
    null once the target is done or the case closed). ``met``: true or false once known,
    null while still open and not overdue; false for good once a breach was recorded
    (``breached_at``), whatever the deadline is now. ``set_by_hand``: the deadline was set
    by a person, and re-plans keep it."""

    due_at: dt.datetime | None
    done_at: dt.datetime | None
    remaining_seconds: float | None
    met: bool | None
    breached_at: dt.datetime | None = None
    set_by_hand: bool = False


class CaseSla(msgspec.Struct):
    """``state``: none (no policy applies), ok, warning or breached; ``paused`` while On Hold."""

    state: str = "none"
    paused: bool = False
    paused_at: dt.datetime | None = None
    policy_id: int | None = None
    first_response: SlaTargetState | None = None
    resolution: SlaTargetState | None = None
