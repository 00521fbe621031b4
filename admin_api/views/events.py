"""Producer events, trigger rules, operator sends and campaign live progress (issue 6)."""

from __future__ import annotations

from admin_api.routing import EndpointTable

endpoints = EndpointTable("events")
