"""A compact set of message ids for the simulators: 5 M ids in about 80 MB.

A Python ``set`` of 5 M id strings costs ~475 MB (the strings ~340 MB, the table
~134 MB); a ``set`` of their 64-bit hashes still ~295 MB, because every int is an
object. Here each id is kept as its 64-bit hash in open-addressed ``array('q')``
tables, 8 bytes a slot at most 60 % full. The table is split into 256 shards so that
growing one rehashes ~1/256 of the ids: no pause of a second at 5 M.

The price is that two different ids with the same 64-bit hash count as one: with
SipHash and 5 M ids the chance of any such pair in a run is about 7e-7.
"""

from __future__ import annotations

from array import array

_SHARD_BITS = 8
_SHARDS = 1 << _SHARD_BITS
_SHARD_MASK = _SHARDS - 1
_INITIAL = 1024
_LOAD = 0.6


def id_hash(message_id: str) -> int:
    """The 64-bit key of an id; never 0, which marks an empty slot."""
    return hash(message_id) or 1


class IdSet:
    """Membership of 64-bit id hashes (see ``id_hash``), with ``add`` telling new from seen."""

    __slots__ = ("_tables", "_masks", "_counts", "_limits", "_size")

    def __init__(self) -> None:
        self._tables = [array("q", bytes(8 * _INITIAL)) for _ in range(_SHARDS)]
        self._masks = [_INITIAL - 1] * _SHARDS
        self._counts = [0] * _SHARDS
        self._limits = [int(_INITIAL * _LOAD)] * _SHARDS
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __contains__(self, key: int) -> bool:
        shard = key & _SHARD_MASK
        table = self._tables[shard]
        mask = self._masks[shard]
        i = (key >> _SHARD_BITS) & mask
        while True:
            found = table[i]
            if found == key:
                return True
            if found == 0:
                return False
            i = (i + 1) & mask

    def add(self, key: int) -> bool:
        """Add ``key``; True if it was not there yet."""
        shard = key & _SHARD_MASK
        table = self._tables[shard]
        mask = self._masks[shard]
        i = (key >> _SHARD_BITS) & mask
        while True:
            found = table[i]
            if found == 0:
                table[i] = key
                self._size += 1
                count = self._counts[shard] + 1
                self._counts[shard] = count
                if count > self._limits[shard]:
                    self._grow(shard)
                return True
            if found == key:
                return False
            i = (i + 1) & mask

    @property
    def nbytes(self) -> int:
        """Memory held by the tables."""
        return sum(len(t) * 8 for t in self._tables)

    def _grow(self, shard: int) -> None:
        old = self._tables[shard]
        capacity = len(old) * 2
        mask = capacity - 1
        table = array("q", bytes(8 * capacity))
        for key in old:
            if key:
                i = (key >> _SHARD_BITS) & mask
                while table[i]:
                    i = (i + 1) & mask
                table[i] = key
        self._tables[shard] = table
        self._masks[shard] = mask
        self._limits[shard] = int(capacity * _LOAD)
