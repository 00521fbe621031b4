"""The CRM domain: users and sessions, RBAC, the client card, billing cache, contacts,
search, CTI, timeline, cases and segments, and reading the audit journal.

May import ``rules``, ``providers`` and the kernel (``herald.settings``, ``db``, ``errors``,
``clock``, ``bounds``, ``audit``...); never ``dispatcher``, ``admin_api`` or ``herald.cli``
(``[tool.importlinter]`` in pyproject.toml). ``dispatcher`` may import ``crm``.
"""
