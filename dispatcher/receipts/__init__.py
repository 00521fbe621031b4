"""After a send: delivery receipts and their timeouts (``apply``) move a failed message to
the next channel of its chain, and held messages are released (``holds``), for campaign
and realtime messages alike.

May import ``campaigns`` (recording a chain step), ``realtime`` (reopening a message), the
shared plumbing and everything below ``dispatcher``; never ``send``, ``scheduler`` or
``worker``.
"""
