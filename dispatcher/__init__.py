"""The messaging engine: campaigns and realtime messages, from intake to delivery receipts.

Sub-packages follow the flow of a message; each may import only those listed below it
(``[tool.importlinter]`` in pyproject.toml checks it):

- ``worker``: the process entry, wiring the send path, the scheduler and the providers;
- ``scheduler``: the periodic duties (launches, releases, receipt expiry, case duties);
- ``send`` (the hot path: a batch through rules, rendering, rate limits, providers) and
  ``receipts`` (receipts and their timeouts move a message down its chain; holds released);
- ``campaigns`` (define, launch, plan into batches) and ``realtime`` (triggered,
  operator and case messages: intake and the realtime_messages rows);
- ``templating``: templates, their rendering and library;
- the shared plumbing: ``topology`` (queues, shards, publishing), ``envelopes`` (queue
  message bodies, message ids), ``outcomes`` (events, holds, counters), ``recipients``
  (recipient data for templates), ``deadlines`` (receipt clocks).

``dispatcher`` may import ``crm`` (cases, segments, timeline), ``rules``, ``providers``
and the kernel; ``crm`` never imports ``dispatcher``, and nothing here imports aiohttp.
"""
