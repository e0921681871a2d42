"""Where files live in a data directory, and how WAL segment and snapshot files are named.

etcd's layout: `<data-dir>/member/wal` holds segments "%016x-%016x.wal" % (seq, first_index),
`<data-dir>/member/snap` holds raft snapshots "%016x-%016x.snap" % (term, index). Segment seqs
are consecutive; a file being prepared carries a ".tmp" suffix until it is renamed into place.
"""

from __future__ import annotations

import os
import re

SEGMENT_SUFFIX = ".wal"
SNAP_SUFFIX = ".snap"
TMP_SUFFIX = ".tmp"
BROKEN_SUFFIX = ".broken"
_SEGMENT_RE = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")
_SNAP_RE = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")


def wal_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "member", "wal")


def snap_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "member", "snap")


def segment_name(seq: int, first_index: int) -> str:
    assert 0 <= seq < 1 << 64
    assert 0 <= first_index < 1 << 64
    return f"{seq:016x}-{first_index:016x}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> tuple[int, int] | None:
    """(seq, first_index) of a segment file name, or None for any other name."""
    match = _SEGMENT_RE.match(name)
    if match is None:
        return None
    return int(match.group(1), 16), int(match.group(2), 16)


def snap_name(term: int, index: int) -> str:
    assert 0 <= term < 1 << 64
    assert 0 < index < 1 << 64
    return f"{term:016x}-{index:016x}{SNAP_SUFFIX}"


def parse_snap_name(name: str) -> tuple[int, int] | None:
    """(term, index) of a snapshot file name, or None for any other name."""
    match = _SNAP_RE.match(name)
    if match is None:
        return None
    return int(match.group(1), 16), int(match.group(2), 16)
