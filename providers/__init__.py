"""Adapters to the outside world: the channel providers (SMS, Viber, e-mail) and the
billing API client; ``providers.sim`` simulates them locally.

May import only the kernel (``herald.settings``, ``errors``, ``clock``...). Only the
composition root (``herald.cli``) and tests use ``providers.sim``.
"""
