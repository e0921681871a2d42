"""The watchable store: the KV store plus watchers that get every change once, in order.

A watcher is in exactly one state:
- synced: its next revision is the store's next one; it sits in the synced group (point keys
  in a dict, ranges grouped by (start, end)) and gets each revision's events as the batch that
  wrote them commits (`_notify`);
- unsynced: it must catch up from `min_rev` (start revision in the past, or after a restore);
  `sync_watchers` reads the backend in bounded scans and sends at most 1000 revisions per
  batch, then moves it to synced when it reaches the current revision;
- victim: its stream's queue was full; its one undelivered batch is held and `sync_watchers`
  retries it, then the watcher catches up as unsynced. Writes never wait for a watcher.

Invariants: for every watcher, revisions of delivered events strictly increase and no revision
>= its start is skipped (min_rev is the next revision it has not been sent); memory per stream
is bounded by max_pending_responses batches plus one held batch per victim watcher; Event
objects are built once per change (one without and one with prev_kv) and shared.
A watch whose start revision is below the compact revision gets one canceled batch carrying
the compact revision and is removed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from petcd import errors
from petcd.mvcc import revision
from petcd.mvcc.backend import Backend
from petcd.mvcc.key_index import live_at
from petcd.mvcc.kvstore import Change, KVStore, LeaseHooks, key_of
from petcd.pb import kv_pb2

Event = kv_pb2.Event
MAX_REVISIONS_PER_BATCH = 1000
SYNC_SCAN_MAX_ENTRIES = 10_000
_SYNCED, _UNSYNCED, _VICTIM, _GONE = range(4)


@dataclass(slots=True)
class WatchBatch:
    """What a stream hands to the API layer: one WatchResponse's worth.

    `revision` is the revision the events bring the watcher to (etcd's header revision): the
    events' revision for a synced watcher, the current revision for a catch-up batch that
    brings it up to date, and the last revision covered for one that does not (etcd sends the
    current revision there too). A canceled batch for a compacted start has revision 0 (as
    etcd's header) and compact_revision set.
    """

    watch_id: int
    events: list[Any]
    revision: int
    compact_revision: int = 0
    canceled: bool = False


class _Watcher:
    __slots__ = (
        "end",
        "held",
        "id",
        "key",
        "min_rev",
        "no_delete",
        "no_put",
        "prev_kv",
        "state",
        "stream",
    )

    def __init__(
        self,
        stream: WatchStream,
        watch_id: int,
        key: bytes,
        end: bytes | None,
        min_rev: int,
        flags: tuple[bool, bool, bool],
    ) -> None:
        self.stream = stream
        self.id = watch_id
        self.key = key
        self.end = end  # None: one key; b"": no end; else exclusive end
        self.min_rev = min_rev  # the next revision this watcher has not been sent
        self.no_put, self.no_delete, self.prev_kv = flags
        self.state = _UNSYNCED
        self.held: WatchBatch | None = None


class _WatcherGroup:
    """Watchers by key: a dict for single keys, ranges grouped by (start, end)."""

    __slots__ = ("points", "ranges", "size")

    def __init__(self) -> None:
        # dicts used as ordered sets: delivery order is deterministic (replayable tests)
        self.points: dict[bytes, dict[_Watcher, None]] = {}
        self.ranges: dict[tuple[bytes, bytes], dict[_Watcher, None]] = {}
        self.size = 0

    def add(self, w: _Watcher) -> None:
        if w.end is None:
            self.points.setdefault(w.key, {})[w] = None
        else:
            self.ranges.setdefault((w.key, w.end), {})[w] = None
        self.size += 1

    def remove(self, w: _Watcher) -> None:
        if w.end is None:
            group = self.points[w.key]
            del group[w]
            if not group:
                del self.points[w.key]
        else:
            span = (w.key, w.end)
            group = self.ranges[span]
            del group[w]
            if not group:
                del self.ranges[span]
        self.size -= 1
        assert self.size >= 0

    def match(self, key: bytes) -> Iterable[_Watcher]:
        found = self.points.get(key)
        if not self.ranges:
            return found or ()
        out = list(found) if found else []
        for (start, end), group in self.ranges.items():
            if start <= key and (not end or key < end):
                out.extend(group)
        return out

    def all(self) -> list[_Watcher]:
        out = [w for group in self.points.values() for w in group]
        out.extend(w for group in self.ranges.values() for w in group)
        return out


class WatchStream:
    """One client watch stream: its watchers and a bounded queue of batches to send."""

    def __init__(self, store: WatchableStore, notify: Callable[[], None], max_pending: int) -> None:
        assert max_pending > 0
        self._store = store
        self._notify = notify
        self._max_pending = max_pending
        self._queue: deque[WatchBatch] = deque()
        self._notified = False
        self._watchers: dict[int, _Watcher] = {}
        self._next_id = 0
        self._closed = False

    def watch(
        self,
        key: bytes,
        range_end: bytes = b"",
        start_revision: int = 0,
        no_put: bool = False,
        no_delete: bool = False,
        prev_kv: bool = False,
        watch_id: int = 0,
    ) -> int:
        """Create a watcher; returns its id. start_revision 0 means the next revision."""
        assert not self._closed, "watch on a closed stream"
        if start_revision < 0:
            raise errors.CompactedError()
        key = key or b"\x00"  # the smallest key, as etcd
        end: bytes | None = None
        if range_end:
            end = b"" if range_end == b"\x00" else range_end
        if end and key >= end:
            raise errors.WatcherRangeEmptyError()
        if watch_id == 0:
            while self._next_id in self._watchers:
                self._next_id += 1
            watch_id = self._next_id
            self._next_id += 1
        elif watch_id in self._watchers:
            raise errors.WatchDuplicateIdError()
        w = _Watcher(self, watch_id, key, end, start_revision, (no_put, no_delete, prev_kv))
        self._watchers[watch_id] = w
        self._store._add_watcher(w, start_revision)
        return watch_id

    def cancel(self, watch_id: int) -> bool:
        w = self._watchers.pop(watch_id, None)
        if w is None:
            return False
        self._store._remove_watcher(w)
        return True

    def poll(self) -> list[WatchBatch]:
        """Every batch ready to send, oldest first."""
        out = list(self._queue)
        self._queue.clear()
        self._notified = False
        return out

    def progress(self) -> int | None:
        """The current revision if every watcher of the stream is synced, else None."""
        if not self._watchers:
            return None
        if any(w.state != _SYNCED for w in self._watchers.values()):
            return None
        return self._store.current_revision

    def close(self) -> None:
        for watch_id in list(self._watchers):
            self.cancel(watch_id)
        self._queue.clear()
        self._closed = True

    @property
    def watch_ids(self) -> list[int]:
        return list(self._watchers)

    def _send(self, batch: WatchBatch) -> bool:
        """Queue a batch; False (nothing queued) when the queue is full."""
        if len(self._queue) >= self._max_pending:
            return False
        self._queue.append(batch)
        if not self._notified:
            self._notified = True
            self._notify()
        return True

    def _forget(self, w: _Watcher) -> None:
        if self._watchers.get(w.id) is w:
            del self._watchers[w.id]


class WatchableStore(KVStore):
    """KVStore with watch streams. See the module docstring."""

    def __init__(self, backend: Backend, lease_hooks: LeaseHooks | None = None) -> None:
        self._synced = _WatcherGroup()
        self._unsynced: dict[_Watcher, None] = {}  # ordered sets
        self._victims: dict[_Watcher, None] = {}
        super().__init__(backend, lease_hooks)

    def new_watch_stream(
        self, notify: Callable[[], None], max_pending_responses: int = 128
    ) -> WatchStream:
        return WatchStream(self, notify, max_pending_responses)

    @property
    def watcher_counts(self) -> tuple[int, int, int]:
        """(synced, unsynced, victim) watchers, for metrics and tests."""
        return self._synced.size, len(self._unsynced), len(self._victims)

    # --- membership --------------------------------------------------------------------------

    def _add_watcher(self, w: _Watcher, start_rev: int) -> None:
        cur = self._committed_rev
        if start_rev == 0 or start_rev > cur:
            w.min_rev = max(cur + 1, start_rev)
            w.state = _SYNCED
            self._synced.add(w)
        else:
            w.min_rev = start_rev
            w.state = _UNSYNCED
            self._unsynced[w] = None

    def _remove_watcher(self, w: _Watcher) -> None:
        if w.state == _SYNCED:
            self._synced.remove(w)
        elif w.state == _UNSYNCED:
            self._unsynced.pop(w, None)
        elif w.state == _VICTIM:
            self._victims.pop(w, None)
            w.held = None
        w.state = _GONE

    # --- synced delivery ---------------------------------------------------------------------

    def _notify(self, revisions: list[tuple[int, list[Change]]]) -> None:
        if not self._synced.size:
            return
        for rev, changes in revisions:
            per_watcher: dict[_Watcher, list[Any]] = {}
            for change in changes:
                self._match_change(change, rev, per_watcher)
            for w, events in per_watcher.items():
                batch = WatchBatch(w.id, events, rev)
                if w.stream._send(batch):
                    w.min_rev = rev + 1
                else:
                    self._make_victim(w, batch, rev + 1)

    def _match_change(
        self, change: Change, rev: int, per_watcher: dict[_Watcher, list[Any]]
    ) -> None:
        key, raw, prev_raw = change
        is_put = raw is not None
        plain: Any = None
        with_prev: Any = None
        for w in self._synced.match(key):
            if w.min_rev > rev or (w.no_put if is_put else w.no_delete):
                continue
            if w.prev_kv and prev_raw is not None:
                if with_prev is None:
                    with_prev = _event(key, raw, rev, prev_raw)
                event = with_prev
            else:
                if plain is None:
                    plain = _event(key, raw, rev, None)
                event = plain
            found = per_watcher.get(w)
            if found is None:
                per_watcher[w] = [event]
            else:
                found.append(event)

    def _make_victim(self, w: _Watcher, batch: WatchBatch, next_rev: int) -> None:
        assert w.state in (_SYNCED, _UNSYNCED)
        if w.state == _SYNCED:
            self._synced.remove(w)
        else:
            self._unsynced.pop(w, None)
        w.state = _VICTIM
        w.held = batch
        w.min_rev = next_rev
        self._victims[w] = None

    # --- catching up -------------------------------------------------------------------------

    def sync_watchers(self, max_watchers: int = 512) -> None:
        """Retry parked watchers, then catch up to max_watchers unsynced ones (bounded scan)."""
        assert self._batch is None, "sync_watchers inside a write batch"
        assert max_watchers > 0
        self._retry_victims()
        if not self._unsynced:
            return
        cur = self._committed_rev
        chosen = _WatcherGroup()
        for w in list(self._unsynced)[:max_watchers]:
            if w.min_rev > cur:  # after a restore to an older state
                self._unsynced.pop(w, None)
                w.state = _SYNCED
                self._synced.add(w)
            elif w.min_rev < self._committed_compact_rev:
                self._cancel_compacted(w)
            else:
                chosen.add(w)
        if chosen.size:
            self._catch_up(chosen, cur)

    def _retry_victims(self) -> None:
        cur = self._committed_rev
        for w in list(self._victims):
            assert w.held is not None
            if not w.stream._send(w.held):
                continue
            w.held = None
            self._victims.pop(w, None)
            if w.min_rev > cur:
                w.state = _SYNCED
                self._synced.add(w)
            else:
                w.state = _UNSYNCED
                self._unsynced[w] = None

    def _cancel_compacted(self, w: _Watcher) -> None:
        batch = WatchBatch(w.id, [], 0, compact_revision=self._committed_compact_rev, canceled=True)
        if w.stream._send(batch):
            self._unsynced.pop(w, None)
            w.state = _GONE
            w.stream._forget(w)

    def _scan(self, min_rev: int, cur: int) -> tuple[list[tuple[int, bytes, bytes]], int]:
        """Backend changes with min_rev <= main <= cur, whole revisions, bounded in count.

        Returns ((packed, key, raw value) list, last revision fully included).
        """
        found: list[tuple[int, bytes, bytes]] = []
        last_full = cur
        end = revision.main_bytes(cur + 1)
        with self.backend.reader().cursor(db=self.backend.key_db) as cursor:
            ok = cursor.set_range(revision.main_bytes(min_rev))
            while ok:
                raw_rev = cursor.key()
                if raw_rev >= end:
                    break
                packed = revision.from_bytes(raw_rev)
                if len(found) >= SYNC_SCAN_MAX_ENTRIES and packed >> 33 != found[-1][0] >> 33:
                    last_full = (packed >> 33) - 1
                    break
                raw = cursor.value()
                found.append((packed, key_of(raw), raw))
                ok = cursor.next()
        return found, last_full

    def _catch_up(self, chosen: _WatcherGroup, cur: int) -> None:
        watchers = chosen.all()
        min_rev = min(w.min_rev for w in watchers)
        found, last_full = self._scan(min_rev, cur)
        per_watcher: dict[_Watcher, list[Any]] = {}
        revs_seen: dict[_Watcher, tuple[int, int]] = {}  # (distinct revisions, last one)
        stop_at: dict[_Watcher, int] = {}
        for packed, key, raw in found:
            rev = packed >> 33
            plain: Any = None
            with_prev: Any = None
            for w in chosen.match(key):
                if rev < w.min_rev or w in stop_at:
                    continue
                tomb = packed & 1
                if w.no_delete if tomb else w.no_put:
                    continue
                count, last = revs_seen.get(w, (0, 0))
                if rev != last:
                    if count >= MAX_REVISIONS_PER_BATCH:
                        stop_at[w] = rev
                        continue
                    revs_seen[w] = (count + 1, rev)
                if w.prev_kv:
                    if with_prev is None:
                        with_prev = self._backend_event(key, raw, packed, True)
                    event = with_prev
                else:
                    if plain is None:
                        plain = self._backend_event(key, raw, packed, False)
                    event = plain
                per_watcher.setdefault(w, []).append(event)
        for w in watchers:
            # a watcher ahead of a truncated scan keeps its place (never moves back)
            next_rev = stop_at.get(w, max(w.min_rev, last_full + 1))
            self._deliver_catch_up(w, per_watcher.get(w), next_rev, cur)

    def _deliver_catch_up(
        self, w: _Watcher, events: list[Any] | None, next_rev: int, cur: int
    ) -> None:
        assert next_rev >= w.min_rev, "a watcher never goes back in revisions"
        if events:
            batch = WatchBatch(w.id, events, next_rev - 1)
            if not w.stream._send(batch):
                self._make_victim(w, batch, next_rev)
                return
        w.min_rev = next_rev
        self._unsynced.pop(w, None)
        if next_rev > cur:
            w.state = _SYNCED
            self._synced.add(w)
        else:
            self._unsynced[w] = None  # to the back: the next pass serves the others first

    def _backend_event(self, key: bytes, raw: bytes, packed: int, with_prev: bool) -> Any:
        rev = packed >> 33
        event = Event()
        if packed & 1:
            event.type = Event.DELETE
            event.kv.key = key
            event.kv.mod_revision = rev
        else:
            event.kv.ParseFromString(raw)
        if with_prev and rev - 1 >= self._committed_compact_rev:
            prev = live_at(self.index.entries.get(key), rev - 1)
            if prev is not None:
                prev_raw = self.backend.reader().get(
                    revision.to_bytes(prev), db=self.backend.key_db
                )
                if prev_raw is not None:
                    event.prev_kv.ParseFromString(prev_raw)
        return event

    # --- restore -----------------------------------------------------------------------------

    def restore(self, snapshot_backend_path: str) -> None:
        """Replace the backend; every synced watcher re-syncs from its next revision."""
        seen = self._committed_rev
        super().restore(snapshot_backend_path)
        for w in self._synced.all():
            self._synced.remove(w)
            w.min_rev = max(w.min_rev, seen + 1)  # it was sent everything up to `seen`
            w.state = _UNSYNCED
            self._unsynced[w] = None
        assert self._synced.size == 0


def _event(key: bytes, raw: bytes | None, rev: int, prev_raw: bytes | None) -> Any:
    event = Event()
    if raw is None:
        event.type = Event.DELETE
        event.kv.key = key
        event.kv.mod_revision = rev
    else:
        event.kv.ParseFromString(raw)
    if prev_raw is not None:
        event.prev_kv.ParseFromString(prev_raw)
    return event
