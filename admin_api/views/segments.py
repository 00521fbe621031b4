"""Segments: the attribute catalogue, condition trees, preview, members, set operations (issue 6)."""

from __future__ import annotations

from admin_api.routing import EndpointTable

endpoints = EndpointTable("segments")
