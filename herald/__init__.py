"""Herald: CRM core and customer-messaging engine for B2C utilities and telecom operators.

This package is two things, kept apart by ``[tool.importlinter]`` in pyproject.toml:

- the **kernel** every other package may use: ``settings``, ``db``, ``amqp``, ``logs``,
  ``errors``, ``clock``, ``bounds`` and ``audit`` (the journal's write side). The kernel
  imports nothing of Herald's above it (no ``crm``, ``rules``, ``providers``,
  ``dispatcher``, ``admin_api`` or ``herald.cli``).
- the **composition root** ``herald.cli``: the ``herald`` command and everything its
  commands run (``up``, migrations, the seeder, demo data, benchmarks, screenshots). It may
  import everything; nothing imports it.
"""

__version__ = "0.1.0"
