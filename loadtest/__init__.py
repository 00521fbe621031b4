"""Locust scenarios for the admin API (``locustfile.py``), run by locust, not by Herald.

Sits above the composition root: may import anything (``herald.cli.demo`` for its users);
nothing imports it. The benchmarks of ``herald bench`` live in ``herald.cli.bench``.
"""
