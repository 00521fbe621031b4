"""The Client 360 card and the billing connector's refresh (issue 4, points 1-2)."""

from __future__ import annotations

from admin_api.routing import EndpointTable

endpoints = EndpointTable("clients")
