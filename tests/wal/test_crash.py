"""Crash test: a child process writing the WAL is killed with SIGKILL at random points, again and
again on the same directory. After every kill the WAL must open without corruption and hold
exactly the operations the child acknowledged (an operation is acknowledged after it returned),
plus possibly the one it was in the middle of, whole or not at all.

The child (crash_child.py) and this test build the same seeded plan, so the test knows what
each acknowledged operation wrote. Half the rounds write in small pieces so that kills also
land inside writes, leaving torn records for the next open to repair; some rounds are killed
while the child is opening (and repairing) the log.
"""

from __future__ import annotations

import logging
import os
import pathlib
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest

from petcd.wal import WAL
from tests.wal.crash_child import SEGMENT_BYTES, Op, Start, plan

CHILD = str(pathlib.Path(__file__).with_name("crash_child.py"))
SEED = 20240611
ROUNDS = int(os.environ.get("PETCD_WAL_CRASH_ROUNDS", "36"))  # more: a longer hunt
ACKS_BEFORE_KILL_MAX = 30

View = tuple[tuple[int, int, int], tuple[int, int] | None, list[tuple[int, int, bytes]]]


@dataclass(slots=True)
class Model:
    """The log as the acknowledged operations wrote it, from index 1."""

    log: list[tuple[int, int, bytes]] = field(default_factory=list)
    hard_state: tuple[int, int, int] = (0, 0, 0)
    snap: tuple[int, int] | None = None  # newest snapshot marker (index, term)

    def after(self, ops: list[Op]) -> Model:
        model = Model(list(self.log), self.hard_state, self.snap)
        for op in ops:
            if op.kind == "save":
                if op.payloads:
                    del model.log[op.first - 1 :]
                    model.log.extend(
                        (op.first + k, op.term, data) for k, data in enumerate(op.payloads)
                    )
                model.hard_state = (op.term, 1, op.commit)
            elif op.kind == "snapshot":
                model.snap = (op.index, op.term)
        return model

    def view(self) -> View:
        after = self.snap[0] if self.snap else 0
        return self.hard_state, self.snap, self.log[after:]

    def start(self) -> Start:
        hard_state, snap, entries = self.view()
        snap_index = snap[0] if snap else 0
        last = entries[-1][0] if entries else snap_index
        return Start(last, hard_state[0], hard_state[2], snap_index)


def _actual_view(waldir: str) -> View | None:
    """What a restarting server would read: newest valid snapshot, then the log after it."""
    if not WAL.exists(waldir):
        return None
    valid = WAL.valid_snapshots(waldir)
    snapshot = valid[-1] if valid else None
    with WAL.open(waldir, snapshot, SEGMENT_BYTES) as wal:
        _, hard_state, entries = wal.read_all()
    snap = (snapshot.index, snapshot.term) if snapshot else None
    state = (hard_state.term, hard_state.vote, hard_state.commit)
    return state, snap, [(e.index, e.term, e.data) for e in entries]


def _run_round(waldir: str, round_: int, rng: random.Random) -> tuple[Start | None, int]:
    """Run the child until a random point, SIGKILL it; (its start state, operations acked)."""
    chunked = "1" if round_ % 2 else "0"
    child = subprocess.Popen(
        [sys.executable, CHILD, waldir, str(SEED), str(round_), chunked],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    lines: list[bytes] = []
    try:
        lines.append(child.stdout.readline())
        assert lines[0] == b"opening\n"
        if rng.random() > 0.15:  # else kill it while it opens (and maybe repairs) the log
            lines.append(child.stdout.readline())  # the start line
            for _ in range(rng.randint(0, ACKS_BEFORE_KILL_MAX)):  # bounded by the plan
                lines.append(child.stdout.readline())
        time.sleep(rng.random() * 0.003)  # not synchronisation: it picks the kill point
        os.kill(child.pid, signal.SIGKILL)
        lines.extend(child.stdout.read().split(b"\n"))  # acks written before the kill count
    finally:
        child.kill()
        returncode = child.wait(timeout=30)
        stderr = child.stderr.read()
        child.stdout.close()
        child.stderr.close()
    assert returncode == -signal.SIGKILL, stderr.decode()
    starts = [line.split() for line in lines if line.startswith(b"start ")]
    if not starts:
        return None, 0
    acks = [int(line.split()[1]) for line in lines if line.startswith(b"ack ")]
    assert acks == list(range(1, len(acks) + 1))
    return Start(*(int(x) for x in starts[0][1:])), len(acks)


def test_sigkill_at_random_points_loses_nothing_acknowledged(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    waldir = str(tmp_path / "member" / "wal")
    rng = random.Random(SEED)
    model = Model()
    kills = 0
    for round_ in range(ROUNDS):
        start, acked = _run_round(waldir, round_, rng)
        kills += 1
        if start is None:  # killed before it told us where it started: it wrote nothing new
            assert _actual_view(waldir) in (None, model.view())
            continue
        assert start == model.start(), f"round {round_}: the child recovered something else"
        ops = plan(SEED, round_, start)
        candidates = [model.after(ops[:acked]), model.after(ops[: acked + 1])]
        with caplog.at_level(logging.WARNING, logger="petcd.wal"):
            actual = _actual_view(waldir)
        if actual is None:
            assert acked == 0 and not model.log, f"round {round_}: the WAL vanished"
            continue
        matching = [c for c in candidates if c.view() == actual]
        assert matching, f"round {round_}: after {acked} acked operations the WAL holds other data"
        model = matching[-1]
    assert kills >= 30
    assert len(model.log) > 100, "the rounds made progress"
    torn = [r for r in caplog.records if "torn record" in r.getMessage()]
    print(f"{kills} kills, {len(torn)} torn tails repaired, log of {len(model.log)} entries")
