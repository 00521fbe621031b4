"""Client search by phone, OR, Client_ID, EIC, address and name (issue 4, point 7)."""

from __future__ import annotations

from admin_api.routing import EndpointTable

endpoints = EndpointTable("search")
