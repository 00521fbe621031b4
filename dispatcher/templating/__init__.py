"""Message templates: the jinja2 environment, compiling and rendering per channel, SMS text
accounting, and the stored template library.

May import the dispatcher's shared plumbing (``recipients``), ``rules`` (consent, for the
unsubscribe link), ``providers.base`` and the kernel; nothing else in ``dispatcher``.
"""
