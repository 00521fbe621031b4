"""Realtime messages: one client, now. Producers post events (``producers``, ``intake``)
that trigger rules turn into messages (``triggers``); operators send (``operator_send``);
cases notify clients and answer them (``case_notify``, ``case_replies``,
``case_deliveries``). Each becomes a realtime_messages row (``messages``), published to the
realtime queues.

May import ``templating``, the shared plumbing and everything below ``dispatcher``
(``crm.cases`` included); never ``campaigns``, ``send``, ``receipts``, ``scheduler`` or
``worker``.
"""
