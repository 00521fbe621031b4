"""Incoming-call identification: VICIdial events and the agent's live feed (issue 4, point 8)."""

from __future__ import annotations

from admin_api.routing import EndpointTable

endpoints = EndpointTable("cti")
