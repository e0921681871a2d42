"""Torn tails on real files: the last segment cut at every byte offset of its last records, with
the rest of the file gone or still preallocated zeros. WAL.open must succeed, return exactly the
saves whose records survived intact, zero the torn bytes, and keep appending correctly after."""

from __future__ import annotations

import os
import pathlib

import pytest

from petcd.pb import raft_pb2
from petcd.wal import WAL
from petcd.wal.record import scan_segment
from tests.wal.helpers import copy_dir, entries, hard_state, segment_paths, summary

SEGMENT_BYTES = 4096


def _saves() -> list[tuple[raft_pb2.HardState, list[raft_pb2.Entry]]]:
    """Saves that fill two segments and end with a conflicting rewrite (entries 46.. replaced)."""
    saves = [(hard_state(1, i + 3), entries(i, i + 3, size=90)) for i in range(1, 49, 4)]
    saves.append((hard_state(2, 45), entries(46, 47, term=2, size=40)))
    saves.append((hard_state(2, 47), entries(48, 49, term=2, size=70)))
    return saves


def _model(saves: list[tuple[raft_pb2.HardState, list[raft_pb2.Entry]]], records: int) -> tuple:
    """(hard state, log) when only the first `records` log records survived. Each save wrote an
    ENTRIES record, then a HARD_STATE record."""
    log: list[raft_pb2.Entry] = []
    state = raft_pb2.HardState()
    for position, (hs, batch) in enumerate(saves):
        if 2 * position < records:
            del log[batch[0].index - 1 :]  # a save starting at i replaces the log from i on
            log.extend(batch)
        if 2 * position + 1 < records:
            state = hs
    return state, summary(log)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[tuple[int, int]], int]:
    """A WAL whose last segment holds several saves; (dir, record spans there, records before)."""
    waldir = str(tmp_path_factory.mktemp("pristine") / "wal")
    saves = _saves()
    with WAL.create(waldir, b"m", SEGMENT_BYTES) as wal:
        for hs, batch in saves:
            wal.save(hs, batch)
    paths = segment_paths(waldir)
    assert len(paths) >= 2
    counts = []
    spans: list[tuple[int, int]] = []
    for path in paths:
        data = pathlib.Path(path).read_bytes()
        scan = scan_segment(path, data, last=path == paths[-1])
        counts.append(len(scan.records))
        ends = [r.offset for r in scan.records[1:]] + [scan.end_offset]
        spans = [(r.offset, end) for r, end in zip(scan.records, ends)]
    assert len(spans) >= 6
    return waldir, spans, sum(counts[:-1])


@pytest.mark.parametrize("zero_filled", [False, True])
def test_open_after_a_cut_at_every_byte_of_the_last_records(
    pristine: tuple[str, list[tuple[int, int]], int], tmp_path: pathlib.Path, zero_filled: bool
) -> None:
    waldir, spans, records_before = pristine
    saves = _saves()
    last_name = os.path.basename(segment_paths(waldir)[-1])
    original = pathlib.Path(segment_paths(waldir)[-1]).read_bytes()
    outcomes = set()
    for cut in range(spans[-5][0], spans[-1][1] + 1):
        data = original[:cut] + (bytes(len(original) - cut) if zero_filled else b"")
        intact = sum(1 for start, end in spans if data[start:end] == original[start:end])
        expected_state, expected_log = _model(saves, records_before + intact)
        outcomes.add((expected_state.commit, len(expected_log)))
        copy = copy_dir(waldir, str(tmp_path / f"cut{cut}"))
        pathlib.Path(copy, last_name).write_bytes(data)
        with WAL.open(copy, segment_size_bytes=SEGMENT_BYTES) as wal:
            _, state, log = wal.read_all()
            assert (state, summary(log)) == (expected_state, expected_log), cut
            if cut % 4 == 0:  # keep appending after the repair: the new record must read back
                wal.save(hard_state(3, 0), entries(len(log) + 1, len(log) + 1, term=3))
        if cut % 4 == 0:
            appended = entries(len(expected_log) + 1, len(expected_log) + 1, term=3)
            with WAL.open(copy, segment_size_bytes=SEGMENT_BYTES) as wal:
                _, state, log = wal.read_all()
            assert summary(log) == expected_log + summary(appended), cut
            assert state == hard_state(3, 0)
    assert len(outcomes) >= 5  # the cuts went through five records: five different logs
