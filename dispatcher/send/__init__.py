"""The send path, run by the workers: one unit of work through the rules, rendering, rate
limits and providers, and its outcomes written in one transaction. ``pipeline`` is a
campaign batch; ``realtime_batch`` reuses it for the realtime messages of one post.

May import ``campaigns`` (the running state), ``templating``, the shared plumbing and
everything below ``dispatcher``; never ``realtime``, ``receipts``, ``scheduler`` or ``worker``.
"""
