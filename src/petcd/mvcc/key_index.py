"""The in-memory key index: every key's history of revisions, ordered by key.

Each key maps to its revisions as packed ints (revision.py), oldest first. To keep memory low
in the common case, a key whose whole retained history is one live revision is stored as a
bare int; anything longer is a list. A tombstone ends a generation (etcd's key_index.go): the
next put starts a new one with version 1, so generations need no objects of their own.

Worked example (main revisions only, t = tombstone):
    put a@2, put a@3, del a@4, put a@6      -> a: [2, 3, 4t, 6]
    state at rev 3 -> 3 (live); at rev 5 -> 4t (absent); at rev 1 -> nothing (absent)
    compact(3): newest <= 3 is 3, live, kept -> [3, 4t, 6]
    compact(5): newest <= 5 is 4t, dropped with all before it -> 6 (bare int)

Invariants:
- a list is strictly ascending and has length >= 2 unless it holds a lone tombstone;
- `multi` is exactly the set of keys whose entry is a list;
- `keys` holds exactly the keys of `entries`, sorted.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

from sortedcontainers import SortedList

Entry = int | list[int]
UNBOUNDED_END = b"\x00"


def live_at(entry: Entry | None, rev: int) -> int | None:
    """The packed revision holding the key's value at main revision `rev`, or None."""
    if entry is None:
        return None
    if type(entry) is int:
        return entry if (entry >> 33) <= rev else None
    assert isinstance(entry, list)
    i = bisect_left(entry, (rev + 1) << 33) - 1
    if i < 0:
        return None
    packed = entry[i]
    return None if packed & 1 else packed


def latest(entry: Entry | None) -> int | None:
    """The packed revision of the key's current value, or None if absent or deleted."""
    if entry is None:
        return None
    if type(entry) is int:
        return entry
    assert isinstance(entry, list)
    packed = entry[-1]
    return None if packed & 1 else packed


def compact_entry(entry: Entry, compact_rev: int) -> Entry | None:
    """The entry with history before `compact_rev` removed (None: the key is gone)."""
    if type(entry) is int:
        return entry
    assert isinstance(entry, list)
    i = bisect_left(entry, (compact_rev + 1) << 33) - 1
    if i < 0:
        return entry
    rest = entry[i + 1 :] if entry[i] & 1 else entry[i:]
    if not rest:
        return None
    if len(rest) == 1 and not rest[0] & 1:
        return rest[0]
    return rest


class KeyIndex:
    """Keys in order (SortedList) plus a dict from key to entry. See the module docstring."""

    __slots__ = ("entries", "keys", "multi")

    def __init__(self) -> None:
        self.entries: dict[bytes, Entry] = {}
        self.keys: SortedList = SortedList()
        self.multi: set[bytes] = set()

    @classmethod
    def from_entries(cls, entries: dict[bytes, Entry], multi: set[bytes]) -> KeyIndex:
        index = cls()
        index.entries = entries
        index.multi = multi
        index.keys = SortedList(entries)
        assert len(index.keys) == len(entries)
        return index

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, key: bytes, packed: int) -> None:
        """Append a change (put or tombstone) newer than every revision of the key."""
        entries = self.entries
        entry = entries.get(key)
        if entry is None:
            entries[key] = packed
            self.keys.add(key)
        elif type(entry) is int:
            assert entry < packed
            entries[key] = [entry, packed]
            self.multi.add(key)
        else:
            assert isinstance(entry, list)
            assert entry[-1] < packed
            entry.append(packed)

    def save(self, key: bytes) -> tuple[Entry | None, int]:
        """What `restore` needs to undo changes made to the key after this call."""
        entry = self.entries.get(key)
        return entry, len(entry) if type(entry) is list else 0

    def restore(self, key: bytes, saved: tuple[Entry | None, int]) -> None:
        entry, length = saved
        if entry is None:
            if key in self.entries:
                del self.entries[key]
                self.keys.remove(key)
            self.multi.discard(key)
        elif type(entry) is int:
            self.entries[key] = entry
            self.multi.discard(key)
        else:
            assert isinstance(entry, list)
            del entry[length:]
            assert len(entry) == length
            self.entries[key] = entry
            self.multi.add(key)

    def iter_keys(self, key: bytes, end: bytes) -> Iterable[bytes]:
        """Keys in [key, end), with etcd's end conventions (b'' = only key, '\\0' = no end)."""
        if not end:
            return (key,) if key in self.entries else ()
        if end == UNBOUNDED_END:
            return self.keys.irange(key, None)  # type: ignore[no-any-return]
        if end <= key:
            return ()
        return self.keys.irange(key, end, inclusive=(True, False))  # type: ignore[no-any-return]

    def range_at(
        self, key: bytes, end: bytes, rev: int, limit: int
    ) -> tuple[list[bytes], list[int], int]:
        """(keys, packed revisions, count) of the live keys in range at `rev`.

        Returns at most `limit` keys and revisions when limit > 0; count is never limited.
        """
        entries = self.entries
        keys: list[bytes] = []
        revs: list[int] = []
        count = 0
        bound = (rev + 1) << 33
        for k in self.iter_keys(key, end):
            entry = entries[k]
            if type(entry) is int:
                if entry >= bound:
                    continue
                packed = entry
            else:
                assert isinstance(entry, list)
                i = bisect_left(entry, bound) - 1
                if i < 0 or entry[i] & 1:
                    continue
                packed = entry[i]
            count += 1
            if limit <= 0 or len(revs) < limit:
                keys.append(k)
                revs.append(packed)
        assert len(revs) <= count
        return keys, revs, count

    def compact_key(self, key: bytes, compact_rev: int) -> None:
        """Drop the key's history before `compact_rev` (the index half of a compaction)."""
        entry = self.entries.get(key)
        if entry is None or type(entry) is int:
            self.multi.discard(key)
            return
        compacted = compact_entry(entry, compact_rev)
        if compacted is None:
            del self.entries[key]
            self.keys.remove(key)
            self.multi.discard(key)
        elif type(compacted) is int:
            self.entries[key] = compacted
            self.multi.discard(key)
        else:
            self.entries[key] = compacted
