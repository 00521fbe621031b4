"""The web UI: server-rendered pages beside the JSON API (issue 13).

Page views live in the modules of this package, one concern each, and are declared in
``EndpointTable``s exactly like API routes (method, path, permission), so the start-up
check and the RBAC tests cover them. They call the same ``crm/`` and ``dispatcher/``
functions as the JSON views. Templates, static files and the gettext catalogues ship
inside the package.
"""
