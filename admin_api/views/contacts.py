"""Contacts, their links to accounts, duplicates, merge and mass edit (issue 4, points 3-4)."""

from __future__ import annotations

from admin_api.routing import EndpointTable

endpoints = EndpointTable("contacts")
