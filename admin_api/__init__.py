"""The aiohttp application: HTTP API, web UI, RBAC, problems, OpenAPI, metrics.

May import ``dispatcher``, ``crm``, ``rules``, ``providers`` and the kernel; only the
composition root (``herald.cli``) imports it.
"""
