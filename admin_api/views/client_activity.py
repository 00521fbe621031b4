"""Meters and readings, the client timeline, digital-channel intake (issue 4, points 5, 6, 9)."""

from __future__ import annotations

from admin_api.routing import EndpointTable

endpoints = EndpointTable("activity")
