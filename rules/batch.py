"""The one place a send is decided: a batch of recipients, walked down its channel chain.

Every path that sends asks this module: campaign batches and realtime messages
(triggers, operator sends, case messages) in the worker (``dispatcher.send.pipeline``), and
the operator's check before a send, which is what the UI and the API show as a refusal
(``dispatcher.realtime.operator_send.judge``). The order of the rules is written here once
(``Rules.verdicts``, named in ``ORDER``); ``decision.combine`` applies it and the first
rule that objects gives the reason.

What the rules need of a batch is read once (``Facts``): the stop-list verdicts and the
consents (one query each, ``read``), the regions under alert (one Redis round trip),
the quiet-hours windows and the regions' time zones (small tables a worker caches). The
recipients come from the caller's recipient query: their addresses and the region of
their primary account. Everything after that is pure and costs no round trip:

- ``Rules.decide(ids, channel)``: each client's decision on one channel (``Send``,
  ``Skip`` or ``Hold``), every rule's batch check combined in ``ORDER``;
- ``Rules.walk(stage, chain)``: each client down the chain from the step it is at. A skip
  moves it on as the fallback state machine says (``rules.fallback``: a stop list ends the
  chain, no contact or consent tries the next channel); a hold or a send ends the walk.
  Rules are evaluated per step for all clients at that step at once;
- ``Rules.preview(client, channels)``: the decision on every channel of a chain, as the
  operator is shown it before sending.

Rate limits come last and are not part of the walk: the sender takes tokens in bulk for
each channel's group of ``Send`` decisions (``rate_limit.pace``) after rendering, so
tokens are spent only on messages that go.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence

import asyncpg
import msgspec

from herald import clock
from rules import air_raid, consent, contact, fallback, quiet_hours, regions, stop_lists
from rules.air_raid import AlertMirror, AlertSnapshot, MirrorNotReady
from rules.contact import Addressee
from rules.decision import SEND, Decision, Skip, Verdicts, combine
from rules.quiet_hours import QuietWindow

# The order of the checks; the first that objects decides. Skips before holds (a message
# that can never go is not parked for nothing), the stop list first (it ends the chain on
# every channel, so it is the reason recorded), a missing contact before a missing
# consent (both pass to the next channel), an alert before quiet hours (an alert has no
# known end; a released message meets quiet hours next). Rate limits follow, per group.
ORDER: tuple[str, ...] = ("stop_lists", "contact", "consent", "air_raid", "quiet_hours")


class Facts(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the rules read for one batch, read once: then deciding is pure."""

    topic: str
    urgent: bool  # the template's: exempt from air-raid and quiet-hours holds
    now: dt.datetime
    stopped: Verdicts  # stop_lists.check
    consents: consent.Consents  # consent.load_consents
    alerts: AlertSnapshot
    windows: Sequence[QuietWindow]
    time_zones: Mapping[str, str]  # region code -> IANA name


class Recovered(msgspec.Struct, frozen=True, tag="recovered"):
    """An earlier attempt handed this step's message over and its receipt came, but the
    attempt died before writing 'sent': record it as sent, never send it again."""


RECOVERED = Recovered()
Move = tuple[int, Decision | Recovered]  # (step, what happens there)


async def read(
    conn: asyncpg.Connection,
    client_ids: Sequence[int],
    channels: Sequence[str],
    topic: str,
    *,
    membership: stop_lists.SegmentMembership | None,
) -> tuple[Verdicts, consent.Consents]:
    """The per-batch reads of the rules on one connection: stop lists (one query, plus one
    membership call for segment entries) and consents on the chain's channels (one query)."""
    stopped = await stop_lists.check(conn, client_ids, topic, membership=membership)
    consents = await consent.load_consents(conn, client_ids, channels, topic)
    return stopped, consents


async def load(
    conn: asyncpg.Connection,
    client_ids: Sequence[int],
    channels: Sequence[str],
    topic: str,
    *,
    urgent: bool,
    mirror: AlertMirror,
    membership: stop_lists.SegmentMembership | None,
) -> Facts:
    """Every fact of a batch read now, uncached (the operator's check; workers cache the
    small tables and read the rest with ``read``)."""
    stopped, consents = await read(conn, client_ids, channels, topic, membership=membership)
    try:
        alerts = await mirror.active_regions()
    except MirrorNotReady:
        alerts = await mirror.sync(conn)
    return Facts(
        topic=topic,
        urgent=urgent,
        now=clock.now(),
        stopped=stopped,
        consents=consents,
        alerts=alerts,
        windows=await quiet_hours.load_windows(conn),
        time_zones=await regions.load_time_zones(conn),
    )


class Rules:
    """The rules over one batch: ``facts`` and the ``recipients`` (client id -> recipient)."""

    def __init__(self, facts: Facts, recipients: Mapping[int, Addressee]) -> None:
        self.facts = facts
        self.recipients = recipients
        # Where each recipient is: their primary account's region (none: the default time
        # zone applies and no alert holds them).
        self._where = {c: (r.region_code,) for c, r in recipients.items() if r.region_code}
        # An alert does not depend on the channel: one check for the whole batch.
        self._alerts = air_raid.check(facts.alerts, recipients, self._where, urgent=facts.urgent)

    def verdicts(self, client_ids: Sequence[int], channel: str) -> tuple[Verdicts, ...]:
        """Every rule's batch check on ``channel``, in ``ORDER``."""
        f = self.facts
        return (
            f.stopped,
            contact.check(self.recipients, client_ids, channel),
            consent.check(f.consents, client_ids, channel),
            self._alerts,
            quiet_hours.check(
                f.now,
                client_ids,
                self._where,
                f.time_zones,
                f.windows,
                channel=channel,
                urgent=f.urgent,
            ),
        )

    def decide(self, client_ids: Sequence[int], channel: str) -> dict[int, Decision]:
        """Each client's decision on ``channel``: the first rule that objects, else ``SEND``."""
        return combine(client_ids, *self.verdicts(client_ids, channel))

    def preview(self, client_id: int, channels: Sequence[str]) -> list[Decision]:
        """The client's decision on every channel of a chain, as if each were tried now."""
        return [self.decide([client_id], channel)[client_id] for channel in channels]

    def walk(
        self,
        stage: Mapping[int, int],
        chain: fallback.Chain,
        settled: Mapping[tuple[int, int], str] | None = None,
    ) -> dict[int, list[Move]]:
        """Walk each client of ``stage`` (client -> the step it is at) down ``chain``.

        Returns, per client in the order of ``stage``, what happens at each step it
        reaches: skips (with their reason), then a ``Send`` or a ``Hold`` at the step it
        stops at, or nothing more when the chain ends (a stop list, or every channel
        skipped). ``settled`` is what an earlier attempt of the same work already
        recorded, by (client, step): ``skipped`` (walk on past it), ``receipted``
        (``RECOVERED``), anything else (sent or failed: the walk stops there, silently).
        A stop list still ends the chain first; its skip is recorded unless settled.
        """
        moves: dict[int, list[Move]] = {c: [] for c in stage}
        waiting: dict[int, list[int]] = defaultdict(list)
        for client_id, step in stage.items():
            waiting[step].append(client_id)
        length = len(chain.steps)
        known = settled or {}
        after_skip: dict[tuple[int, str], fallback.Action] = {}
        for k in range(min(waiting, default=length), length):
            ids = waiting.pop(k, None)
            if not ids:
                continue
            decided = self.decide(ids, chain.steps[k].channel)
            for client_id in ids:
                what = decided[client_id]
                if what is SEND and not known:  # the common case, first
                    moves[client_id].append((k, what))
                    continue
                done = known.get((client_id, k)) if known else None
                if isinstance(what, Skip) and what.reason == "stop_list":
                    if done is None:
                        moves[client_id].append((k, what))
                    continue  # the chain ends here (fallback: Finish "blocked")
                if done is not None:
                    if done == "skipped":  # decided before: walk on without deciding again
                        if k + 1 < length:
                            waiting[k + 1].append(client_id)
                    elif done == "receipted":
                        moves[client_id].append((k, RECOVERED))
                    continue
                moves[client_id].append((k, what))
                if isinstance(what, Skip):
                    action = after_skip.get((k, what.reason))
                    if action is None:
                        action = fallback.next_action(chain, k, fallback.Skipped(k, what.reason))
                        after_skip[(k, what.reason)] = action
                    if isinstance(action, fallback.TryStep):
                        waiting[action.step].append(client_id)
        return moves
