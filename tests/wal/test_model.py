"""The WAL against a naive twin (a dict from index to entry), over random operation sequences:
appends, rewrites of an uncommitted tail, hard states, snapshot markers (also ahead of the log,
as a follower receives them), releases and reopens, across many small segments. After every
reopen the WAL must read back exactly what the twin says."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from petcd.pb import raft_pb2
from petcd.wal import WAL, WalSnapshot

SEGMENT_BYTES = 4096


@dataclass
class Twin:
    log: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    last: int = 0
    term: int = 1
    commit: int = 0
    snap: WalSnapshot | None = None
    hard_state: raft_pb2.HardState = field(default_factory=raft_pb2.HardState)

    def save(self, first: int, payloads: list[bytes]) -> None:
        for index in [i for i in self.log if i >= first]:
            del self.log[index]
        for k, data in enumerate(payloads):
            self.log[first + k] = (self.term, data)
        self.last = first + len(payloads) - 1

    def expected(self) -> list[tuple[int, int, bytes]]:
        index = (self.snap.index if self.snap else 0) + 1
        out = []
        while index in self.log:  # bounded by the log's size
            out.append((index, *self.log[index]))
            index += 1
        assert all(i < index for i in self.log if i not in range(index))
        return out


OPS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "append",
                "append",
                "append",
                "rewrite",
                "snap",
                "snap",
                "follower",
                "release",
                "release",
                "reopen",
            ]
        ),
        st.integers(0, 20),  # entries in a save
        st.sampled_from([0, 7, 300, 1500]),  # bytes per entry
        st.floats(0, 1, exclude_max=True),  # where a rewrite starts / where commit goes
        st.booleans(),  # whether a save carries a hard state
    ),
    min_size=5,
    max_size=50,
)


def _apply(wal: WAL, twin: Twin, op: tuple[str, int, int, float, bool]) -> None:
    kind, count, size, where, with_state = op
    if kind in ("append", "rewrite"):
        first = twin.last + 1
        if kind == "rewrite" and count and twin.last > twin.commit:
            first = twin.commit + 1 + int(where * (twin.last - twin.commit))
            twin.term += 1
        payloads = [bytes([count]) * size for _ in range(count)]
        if payloads:
            twin.save(first, payloads)
        entries = [
            raft_pb2.Entry(term=twin.term, index=first + k, data=d) for k, d in enumerate(payloads)
        ]
        if with_state:
            twin.commit += int(where * (twin.last - twin.commit + 1))  # up to last
            twin.hard_state = raft_pb2.HardState(term=twin.term, commit=twin.commit)
        wal.save(twin.hard_state if with_state else None, entries)
    elif kind == "snap" and twin.commit > (twin.snap.index if twin.snap else 0):
        twin.snap = WalSnapshot(twin.commit, twin.log.get(twin.commit, (twin.term, b""))[0])
        wal.save_snapshot(twin.snap)
    elif kind == "follower":  # a snapshot from the leader, ahead of this log
        twin.snap = WalSnapshot(twin.last + 1 + count, twin.term)
        twin.last = twin.commit = twin.snap.index
        wal.save_snapshot(twin.snap)
        twin.hard_state = raft_pb2.HardState(term=twin.term, commit=twin.commit)
        wal.save(twin.hard_state, [])
    elif kind == "release" and twin.snap is not None:
        wal.release_before(twin.snap.index + 1)


def _check(waldir: str, twin: Twin) -> WAL:
    assert WAL.valid_snapshots(waldir)[-1:] == ([twin.snap] if twin.snap else [])
    wal = WAL.open(waldir, twin.snap, SEGMENT_BYTES)
    _, hard_state, entries = wal.read_all()
    assert [(e.index, e.term, e.data) for e in entries] == twin.expected()
    assert hard_state == twin.hard_state
    assert wal.last_index == twin.last
    return wal


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_wal_reads_back_what_the_twin_holds(ops: list[tuple[str, int, int, float, bool]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        waldir = f"{tmp}/wal"
        twin = Twin()
        wal = WAL.create(waldir, b"twin", SEGMENT_BYTES)
        try:
            for op in ops:
                if op[0] == "reopen":
                    wal.close()
                    wal = _check(waldir, twin)
                else:
                    _apply(wal, twin, op)
            wal.close()
            _check(waldir, twin).close()
        finally:
            wal.close()
