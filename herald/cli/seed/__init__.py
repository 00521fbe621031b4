"""Synthetic CRM data: deterministic Ukrainian gas-supply customers, bulk-loaded with COPY."""

from herald.cli.seed.run import SeedReport, seed_crm
from herald.cli.seed.schema import SeedError

__all__ = ["SeedError", "SeedReport", "seed_crm"]
