"""Send rules: pure decisions over a batch of recipients, and the stores behind them.

``rules.batch`` is the one place a send is decided; every path that sends asks it:
campaign batches and realtime messages (triggers, operator sends, case messages) in the
worker (``dispatcher.send.pipeline``), and the operator's check before a send, which the API
and the UI show as a refusal (``dispatcher.realtime.operator_send.judge``).

Every check takes a whole batch (hundreds to thousands of recipients) and costs at most
one query or one Redis round trip per batch. It returns ``Verdicts`` (``rules.decision``):
only the recipients it stops, each with a ``Skip`` or a ``Hold``. ``decision.combine``
applies them in this order (``batch.ORDER``); the first rule that objects gives the reason:

1. ``stop_lists``  skip ``stop_list``: the client (or a segment they are in) is blocked from
                   the topic. Final for the message on every channel, so it comes first.
2. ``contact``     skip ``no_contact``: no phone (SMS, Viber) or e-mail for the channel;
                   the chain falls back to the next channel.
3. ``consent``     skip ``no_consent`` for this channel: falls back like a missing contact.
4. ``air_raid``    hold, ``until`` None: released when the region's alert is lifted.
5. ``quiet_hours`` hold until the window ends in the recipient's time zone.
6. ``rate_limit``  tokens for the recipients still sendable, taken in bulk per channel
                   group after rendering (``rate_limit.pace``); those not granted in time
                   are held with reason ``rate_limit`` until their tokens are due.

Why this order: skips before holds, so a message that could never go is not parked and
released for nothing; stop list first, so the stronger, chain-ending reason is the one
recorded; air raid before quiet hours, because an alert has no known end while a window
has one (a released message is evaluated again, and quiet hours may then hold it until
the window ends); rate limit last, so tokens are spent only on messages that go.
Urgent messages (``message_templates.urgent``) are exempt from the two holds; they still
honour stop lists, contacts, consent and rate limits.

``fallback`` is the state machine over the channel chain: ``batch.Rules.walk`` moves a
skipped recipient on with it, and the worker (a failed step) and the receipt handling (a
failed receipt, a receipt timeout) ask it for the next step (``fallback.next_step``).

Per batch, a worker does (``dispatcher.send.pipeline.Batch``):

    recipients = ...                                   # its recipient query: addresses, region
    stopped, consents = await batch.read(conn, ids, chain.channels, topic, membership=segments)
    alerts = await mirror.active_regions()             # one Redis round trip
    facts = batch.Facts(topic=topic, urgent=urgent, now=now, stopped=stopped,
                        consents=consents, alerts=alerts, windows=windows, time_zones=zones)
    moves = batch.Rules(facts, recipients).walk(dict.fromkeys(ids, 0), chain)
    # skips and holds are recorded; each channel's Send group is rendered, then:
    paced = await rate_limit.pace(limiter, rate_limit.buckets_for_send(...), len(group), ...)

``time_zones`` (``regions.load_time_zones``), ``windows`` (``quiet_hours.load_windows``)
and the configured limits (``rate_limit.list_limits``) are small tables a worker may
cache for a few seconds.
"""
