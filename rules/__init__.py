"""Send rules: pure decisions over a batch of recipients, and the stores behind them.

Every check takes a whole batch (hundreds to thousands of recipients) and costs at most
one query or one Redis round trip per batch. It returns ``Verdicts`` (``rules.decision``):
only the recipients it stops, each with a ``Skip`` or a ``Hold``. ``decision.combine``
applies them in this order; the first rule that objects gives the reason:

1. ``stop_lists``  skip ``stop_list``: the client (or a segment they are in) is blocked from
                   the topic. Final for the message on every channel, so it comes first.
2. ``consent``     skip ``no_consent`` for this channel: the chain falls back to the next.
3. no contact      skip ``no_contact`` (the worker's own check: no phone/e-mail for the
                   channel); falls back like consent.
4. ``air_raid``    hold, ``until`` None: released when the region's alert is lifted.
5. ``quiet_hours`` hold until the window ends in the recipient's time zone.
6. ``rate_limit``  tokens for the recipients still sendable, taken in bulk; those not
                   granted wait ``retry_after`` (or are held with reason ``rate_limit``).

Why this order: skips before holds, so a message that could never go is not parked and
released for nothing; stop list before consent, so the stronger, chain-ending reason is
the one recorded; air raid before quiet hours, because an alert has no known end while a
window has one (a released message is evaluated again, and quiet hours may then hold it
until the window ends); rate limit last, so tokens are spent only on messages that go.
Urgent messages (``message_templates.urgent``) pass ``urgent=True`` to the two holds and
are exempt from both; they still honour stop lists, consent and rate limits.

``fallback`` is the per-message state machine over the channel chain that consumes the
skips above, provider failures, receipt timeouts and deliveries.

Per batch, a worker does:

    ids = [...]                                        # the batch's client ids
    blocked = await stop_lists.check(conn, ids, topic, membership=segments)
    consents = await consent.load_consents(conn, ids, chain.channels, topic)
    where = await regions.load_client_regions(conn, ids)  # or from its recipient query
    alerts = await mirror.active_regions()                # one Redis round trip
    decisions = decision.combine(
        ids, blocked, consent.check(consents, ids, channel), no_contact,
        air_raid.check(alerts, ids, where, urgent=urgent),
        quiet_hours.check(now, ids, where, time_zones, windows, channel=channel, urgent=urgent))
    go = decision.sendable(decisions)
    grant = await limiter.take(rate_limit.buckets_for_send(...), len(go))

``time_zones`` (``regions.load_time_zones``), ``windows`` (``quiet_hours.load_windows``)
and the configured limits (``rate_limit.list_limits``) are small tables a worker may
cache for a few seconds.
"""
