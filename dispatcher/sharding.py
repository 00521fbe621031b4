"""Which shard a client belongs to; must equal the SQL function herald_shard()."""

from __future__ import annotations


def shard_of(client_id: int, shards: int) -> int:
    """Multiplicative hash of the client id, modulo the shard count (ids below 2**32)."""
    return ((client_id * 2654435761) % 4294967296) % shards
