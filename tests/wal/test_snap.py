"""Snapshotter: save, load the newest valid file, set broken ones aside with a warning, purge."""

from __future__ import annotations

import logging
import os
import pathlib

import pytest

from petcd.pb import raft_pb2
from petcd.wal import Snapshotter, WalSnapshot


def _snapshot(index: int, term: int, data: bytes = b"") -> raft_pb2.Snapshot:
    snapshot = raft_pb2.Snapshot(data=data or f"state@{index}".encode())
    snapshot.metadata.index = index
    snapshot.metadata.term = term
    snapshot.metadata.conf_state.voters.extend([1, 2, 3])
    return snapshot


def test_save_names_the_file_by_term_and_index(tmp_path: pathlib.Path) -> None:
    snapper = Snapshotter(str(tmp_path / "snap"))
    snapper.save(_snapshot(0x1F, 3))
    assert os.listdir(tmp_path / "snap") == ["0000000000000003-000000000000001f.snap"]
    assert snapper.load_newest() == _snapshot(0x1F, 3)


def test_empty_snapshot_is_not_saved_and_nothing_loads(tmp_path: pathlib.Path) -> None:
    snapper = Snapshotter(str(tmp_path))
    snapper.save(raft_pb2.Snapshot())
    assert os.listdir(tmp_path) == []
    assert snapper.load_newest() is None


def test_load_newest_picks_the_highest_index(tmp_path: pathlib.Path) -> None:
    snapper = Snapshotter(str(tmp_path))
    for index, term in [(10, 1), (30, 2), (20, 2)]:
        snapper.save(_snapshot(index, term))
    assert snapper.load_newest() == _snapshot(30, 2)
    assert snapper.names()[0] == "0000000000000002-000000000000001e.snap"


def test_load_newest_only_trusts_files_with_a_wal_marker(tmp_path: pathlib.Path) -> None:
    snapper = Snapshotter(str(tmp_path))
    for index in (10, 20, 30):
        snapper.save(_snapshot(index, 1))
    assert snapper.load_newest([WalSnapshot(20, 1), WalSnapshot(10, 1)]) == _snapshot(20, 1)
    assert snapper.load_newest([WalSnapshot(30, 2)]) is None  # same index, other term
    assert snapper.load_newest([]) is None
    assert len(snapper.names()) == 3  # a file without a marker is skipped, not set aside


@pytest.mark.parametrize(
    "damage",
    ["flip", "truncate", "empty", "garbage", "misnamed"],
)
def test_a_broken_newest_file_is_skipped_with_a_warning(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    snapper = Snapshotter(str(tmp_path))
    snapper.save(_snapshot(10, 1))
    snapper.save(_snapshot(20, 1, data=b"x" * 200))
    newest = tmp_path / "0000000000000001-0000000000000014.snap"
    content = newest.read_bytes()
    if damage == "flip":
        content = content[:100] + bytes([content[100] ^ 4]) + content[101:]
    elif damage == "truncate":
        content = content[:-7]
    elif damage == "empty":
        content = b""
    elif damage == "garbage":
        content = b"\xff" * 64
    else:  # a valid file for another snapshot under this name
        content = (tmp_path / "0000000000000001-000000000000000a.snap").read_bytes()
    newest.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="petcd.wal"):
        assert snapper.load_newest() == _snapshot(10, 1)
    assert any("broken snapshot" in r.getMessage() for r in caplog.records)
    assert not newest.exists()
    assert (tmp_path / (newest.name + ".broken")).read_bytes() == content
    assert snapper.load_newest() == _snapshot(10, 1)  # no warning the second time
    assert snapper.names() == ["0000000000000001-000000000000000a.snap"]


def test_purge_keeps_the_newest(tmp_path: pathlib.Path) -> None:
    snapper = Snapshotter(str(tmp_path))
    for index in range(1, 9):
        snapper.save(_snapshot(index * 10, 1))
    (tmp_path / "0000000000000001-0000000000000063.snap.tmp").write_bytes(b"half")
    snapper.purge(keep=3)
    assert sorted(os.listdir(tmp_path)) == [
        "0000000000000001-000000000000003c.snap",
        "0000000000000001-0000000000000046.snap",
        "0000000000000001-0000000000000050.snap",
    ]
    snapper.purge()
    assert len(os.listdir(tmp_path)) == 3
