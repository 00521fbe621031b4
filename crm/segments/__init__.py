"""Segments (CM-04..CM-06): attribute catalogue, condition trees compiled to SQL, members.

``catalogue`` publishes the attributes a condition may use (built-in and external),
``conditions`` validates a JSON condition tree against it, ``compiler`` turns a valid tree
into parameterised SQL, ``store`` keeps segments and their members, ``refresh`` keeps
dynamic segments current, ``membership`` answers stop-list checks.
"""
