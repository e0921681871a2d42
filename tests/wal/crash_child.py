"""Child process for the WAL crash test: applies a seeded plan of WAL operations and reports each
one on stdout right after it returns, until the parent kills it with SIGKILL.

    python crash_child.py WALDIR SEED ROUND CHUNKED

Lines written: "opening", then "start LAST TERM COMMIT SNAP" (the state it recovered), then
"ack N" after operation N of the plan returned. The parent regenerates the same plan with
`plan()` from the start state, so it knows what every acknowledged (and the one unacknowledged)
operation wrote. With CHUNKED=1 writes go out in 512-byte pieces with a pause between them,
so a kill often lands inside a write and leaves a torn record behind.

Imports only petcd and the standard library: it runs as a script, outside the test package.
"""

from __future__ import annotations

import os
import random
import sys
import time
from dataclasses import dataclass

from petcd.pb import raft_pb2
from petcd.wal import WAL, Disk, WalSnapshot

SEGMENT_BYTES = 16 * 1024
PLAN_OPS = 200
CHUNK_BYTES = 512


@dataclass(slots=True)
class Start:
    last: int  # last entry index (or the snapshot index if no entry follows it)
    term: int
    commit: int
    snap: int  # index of the newest snapshot marker, 0 if none


@dataclass(slots=True)
class Op:
    kind: str  # "save", "snapshot" or "release"
    first: int = 0  # save: index of the first entry
    term: int = 0  # save: term of the entries and of the hard state; snapshot: its term
    payloads: tuple[bytes, ...] = ()  # save: one data blob per entry
    commit: int = 0  # save: hard state commit
    index: int = 0  # snapshot / release: the index


def plan(seed: int, round_: int, start: Start) -> list[Op]:
    """The operations of one round, as raft would issue them: appends, occasional rewrites of
    an uncommitted tail in a new term, snapshots at the commit index and releases after them."""
    rng = random.Random(f"{seed}:{round_}")
    last, term, commit, snap = start.last, max(start.term, 1), start.commit, start.snap
    terms: dict[int, int] = {}  # term of the entries this round wrote, for snapshot markers
    ops: list[Op] = []
    for _ in range(PLAN_OPS):
        roll = rng.random()
        if roll < 0.08 and commit > snap and commit in terms:
            snap = commit
            ops.append(Op("snapshot", term=terms[commit], index=commit))
        elif roll < 0.12 and snap > 0:
            ops.append(Op("release", index=snap + 1))
        else:
            count = rng.choice([0, 1, 1, 2, 5, 10, 40])
            first = last + 1
            if count and last > commit and rng.random() < 0.15:
                first = rng.randint(commit + 1, last)  # a new leader overwrites the tail
                term += 1
            size = rng.choice([0, 10, 100, 300, 1000])
            payloads = tuple(rng.randbytes(size) for _ in range(count))
            if count:
                last = first + count - 1
                for index in range(first, last + 1):
                    terms[index] = term
            commit = rng.randint(commit, last)
            ops.append(Op("save", first, term, payloads, commit))
    return ops


def start_state(hard_state: raft_pb2.HardState, entries: list[raft_pb2.Entry], snap: int) -> Start:
    last = entries[-1].index if entries else snap
    return Start(last, hard_state.term, hard_state.commit, snap)


def apply(wal: WAL, op: Op) -> None:
    if op.kind == "save":
        batch = [
            raft_pb2.Entry(term=op.term, index=op.first + k, data=data)
            for k, data in enumerate(op.payloads)
        ]
        wal.save(raft_pb2.HardState(term=op.term, vote=1, commit=op.commit), batch)
    elif op.kind == "snapshot":
        wal.save_snapshot(WalSnapshot(op.index, op.term))
    else:
        assert op.kind == "release"
        wal.release_before(op.index)


class ChunkedDisk(Disk):
    """Writes in small pieces with a pause between them, to widen the window for torn writes."""

    def write(self, fd: int, data: bytes, offset: int) -> None:
        for start in range(0, len(data), CHUNK_BYTES):
            super().write(fd, data[start : start + CHUNK_BYTES], offset + start)
            time.sleep(0.0001)  # not synchronisation: it only spreads the write out in time


def _say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def main(argv: list[str]) -> int:
    waldir, seed, round_, chunked = argv[1], int(argv[2]), int(argv[3]), argv[4] == "1"
    disk = ChunkedDisk() if chunked else Disk()
    _say("opening")
    if WAL.exists(waldir):
        valid = WAL.valid_snapshots(waldir)
        snapshot = valid[-1] if valid else None
        wal = WAL.open(waldir, snapshot, SEGMENT_BYTES, disk=disk)
        _, hard_state, entries = wal.read_all()
        start = start_state(hard_state, entries, snapshot.index if snapshot else 0)
    else:
        wal = WAL.create(waldir, b"crash-test", SEGMENT_BYTES, disk=disk)
        start = Start(0, 0, 0, 0)
    _say(f"start {start.last} {start.term} {start.commit} {start.snap}")
    for number, op in enumerate(plan(seed, round_, start), 1):
        apply(wal, op)
        _say(f"ack {number}")
    wal.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
