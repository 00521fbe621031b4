"""What a rule decides for one recipient, and how a batch's decisions are combined.

Every batch check returns ``Verdicts``: only the recipients it does not let through,
each with a ``Skip`` (final for this message or channel step, with a reason) or a
``Hold`` (park the message until ``until``, or until the alert is lifted when ``until``
is None). Recipients absent from every verdict are sent. ``combine`` applies the
verdicts in evaluation order: the first rule that objects gives the reason.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Literal

import msgspec

SkipReason = Literal["stop_list", "no_consent", "no_contact"]
HoldReason = Literal["air_raid", "quiet_hours", "rate_limit"]


class Send(msgspec.Struct, frozen=True, tag="send"):
    """Nothing stands in the way: hand the message to the rate limiter and the provider."""


class Skip(msgspec.Struct, frozen=True, tag="skip"):
    """Do not send on this channel step; ``stop_list`` ends the whole chain, the others fall back."""

    reason: SkipReason


class Hold(msgspec.Struct, frozen=True, tag="hold"):
    """Park the message; ``until`` (UTC) is when to re-evaluate it, None: when ``region``'s alert is lifted."""

    reason: HoldReason
    until: dt.datetime | None = None
    region: str | None = None


Decision = Send | Skip | Hold
Verdicts = Mapping[int, Skip | Hold]

SEND = Send()
NO_CONSENT = Skip("no_consent")
NO_CONTACT = Skip("no_contact")
STOP_LIST = Skip("stop_list")


def combine(client_ids: Iterable[int], *verdicts: Verdicts) -> dict[int, Decision]:
    """Each client's decision: the first verdict (in the order given) that names it, else SEND."""
    objecting = [rule for rule in verdicts if rule]  # most rules object to nobody
    if not objecting:
        return dict.fromkeys(client_ids, SEND)
    decided: dict[int, Decision] = {}
    for client_id in client_ids:
        for rule in objecting:
            found = rule.get(client_id)
            if found is not None:
                decided[client_id] = found
                break
        else:
            decided[client_id] = SEND
    return decided


def sendable(decisions: Mapping[int, Decision]) -> list[int]:
    """The clients whose decision is SEND, in the order of ``decisions``."""
    return [c for c, d in decisions.items() if isinstance(d, Send)]
