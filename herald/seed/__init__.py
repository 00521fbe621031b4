"""Synthetic CRM data: deterministic Ukrainian gas-supply customers, bulk-loaded with COPY."""

from herald.seed.run import SeedReport, seed_crm
from herald.seed.schema import SeedError

__all__ = ["SeedError", "SeedReport", "seed_crm"]
