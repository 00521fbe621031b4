"""Campaigns: their definition and state machine (``store``, ``types``), the launch duty
(``launcher``), planning the audience into shard batches (``planner``) and the running
state the workers read (``control``).

May import ``templating``, the shared plumbing (``topology``, ``envelopes``, ``outcomes``,
``deadlines``) and everything below ``dispatcher``; never ``realtime``, ``send``,
``receipts``, ``scheduler`` or ``worker``.
"""
