"""The pure segment scanner, fed whole segments, segments cut at every byte offset of their last
records (as h11's tests feed input whole and byte by byte), and segments with a flipped bit at
every byte. Property: the scanner returns an unaltered prefix of the records written, or raises
CorruptFileError naming the file and the offset of the damaged record. Never other data."""

from __future__ import annotations

import pytest

from petcd.errors import CorruptFileError
from petcd.pb import raft_pb2, wal_pb2
from petcd.wal.record import (
    HEADER_BYTES,
    RECORD_ENTRIES,
    RECORD_HARD_STATE,
    RECORD_SEGMENT,
    RECORD_SNAPSHOT,
    frame,
    framed_bytes,
    scan_segment,
)

PATH = "/data/member/wal/0000000000000000-0000000000000001.wal"
PREALLOC_BYTES = 4096


def _payloads() -> list[tuple[int, bytes]]:
    header = wal_pb2.SegmentHeader(version=1, seq=0, first_index=1, metadata=b"member-1")
    records = [(RECORD_SEGMENT, header.SerializeToString())]
    for first in (1, 4, 9):  # entries 1..3, 4..8, 9..10 of varied sizes (some end in zeros)
        batch = wal_pb2.Entries()
        for index in range(first, first + 2 + first % 4):
            batch.entries.add(term=2, index=index, data=bytes(index % 3) + b"v" * index)
        records.append((RECORD_ENTRIES, batch.SerializeToString()))
        hs = raft_pb2.HardState(term=2, vote=1, commit=first)
        records.append((RECORD_HARD_STATE, hs.SerializeToString()))
    records.append((RECORD_SNAPSHOT, wal_pb2.SnapshotMarker(index=3, term=2).SerializeToString()))
    records.append((RECORD_HARD_STATE, b""))  # an empty payload is a valid record
    return records


def _segment() -> tuple[bytes, list[tuple[int, int]]]:
    """A preallocated segment and the (start, end) byte span of each record in it."""
    records = _payloads()
    data, _ = frame(records, 0)
    spans = []
    offset = 0
    for _, payload in records:
        spans.append((offset, offset + framed_bytes(len(payload))))
        offset += framed_bytes(len(payload))
    assert offset == len(data) < PREALLOC_BYTES
    return data + bytes(PREALLOC_BYTES - len(data)), spans


SEGMENT, SPANS = _segment()
PAYLOADS = _payloads()
USED = SPANS[-1][1]


def _scanned(data: bytes, last: bool) -> list[tuple[int, bytes]]:
    scan = scan_segment(PATH, data, last)
    assert scan.header.metadata == b"member-1"
    out = [(RECORD_SEGMENT, PAYLOADS[0][1])] + [(r.type, r.payload) for r in scan.records]
    assert scan.end_offset == SPANS[len(out) - 1][1]
    return out


def _intact_prefix(data: bytes) -> int:
    """How many leading records are byte-for-byte as written in `data`."""
    count = 0
    for start, end in SPANS:
        if data[start:end] != SEGMENT[start:end]:
            break
        count += 1
    return count


def test_frame_matches_the_worked_example() -> None:
    payload = raft_pb2.HardState(term=2, vote=1, commit=5).SerializeToString()
    data, crc = frame([(RECORD_HARD_STATE, payload)], 0x6EEC9B9F)
    assert data.hex(" ") == (
        "7c 86 b7 6f 06 00 00 00 03 00 00 00 ed 8b fd 10 08 02 10 01 18 05 00 00"
    )
    assert crc == 0x10FD8BED


def test_chained_crc_continues_across_frame_calls() -> None:
    whole, crc_whole = frame(PAYLOADS, 0)
    first, crc = frame(PAYLOADS[:3], 0)
    rest, crc_rest = frame(PAYLOADS[3:], crc)
    assert first + rest == whole
    assert crc_rest == crc_whole


@pytest.mark.parametrize("last", [True, False])
def test_whole_segment_scans_back(last: bool) -> None:
    assert _scanned(SEGMENT, last) == PAYLOADS
    scan = scan_segment(PATH, SEGMENT, last)
    assert scan.torn_end == scan.end_offset == USED
    assert scan.crc == frame(PAYLOADS, 0)[1]
    # Without the preallocated tail the same records come back.
    assert _scanned(SEGMENT[:USED], last) == PAYLOADS


def test_cut_at_every_offset_of_the_last_records() -> None:
    """A crash mid-write: the file ends early, or the rest is still preallocated zeros."""
    for cut in range(SPANS[-4][0], USED + 1):
        for data in (SEGMENT[:cut], SEGMENT[:cut] + bytes(PREALLOC_BYTES - cut)):
            expected = _intact_prefix(data)
            assert _scanned(data, last=True) == PAYLOADS[:expected], cut
            scan = scan_segment(PATH, data, last=True)
            assert scan.torn_end >= scan.end_offset
            assert all(b == 0 for b in data[scan.torn_end :])  # what is left after the zeroing


def test_cut_inside_a_record_of_an_older_segment_is_corruption() -> None:
    for cut in range(SPANS[-3][0], USED + 1):
        data = SEGMENT[:cut] + bytes(PREALLOC_BYTES - cut)
        boundary = [k for k, (start, end) in enumerate(SPANS) if start < cut < end]
        intact = _intact_prefix(data)
        if not boundary or intact > boundary[0]:
            # Cut on a record boundary (or only zero bytes cut off): a clean, shorter segment.
            assert _scanned(data, last=False) == PAYLOADS[:intact]
            continue
        with pytest.raises(CorruptFileError) as info:
            scan_segment(PATH, data, last=False)
        assert info.value.path == PATH
        assert info.value.offset == SPANS[boundary[0]][0], cut


@pytest.mark.parametrize("last", [True, False])
def test_flipped_bit_at_every_byte(last: bool) -> None:
    positions = [*range(USED + 64), PREALLOC_BYTES - 1, PREALLOC_BYTES // 2 + 3]
    for position in positions:
        for bit in (0x01, 0x80):
            data = bytearray(SEGMENT)
            data[position] ^= bit
            _check_flip(bytes(data), position, last)


def _check_flip(data: bytes, position: int, last: bool) -> None:
    inside = [k for k, (start, end) in enumerate(SPANS) if start <= position < end]
    try:
        got = _scanned(data, last)
    except CorruptFileError as exc:
        assert exc.path == PATH
        if inside:
            assert exc.offset == SPANS[inside[0]][0], position
        else:
            assert USED <= exc.offset <= position, position
        return
    # No error: only an unaltered prefix may come back, and only the final record may be
    # dropped (as a torn write), only in the last segment.
    assert got == PAYLOADS[: len(got)]
    if inside:
        assert last, position
        assert inside[0] == len(PAYLOADS) - 1 == len(got), position
    else:
        assert got == PAYLOADS
        assert position < USED + HEADER_BYTES, "junk right after the records reads as torn"


def test_data_after_the_end_of_the_records_is_corruption() -> None:
    data = bytearray(SEGMENT)
    data[USED + 100] = 7
    with pytest.raises(CorruptFileError) as info:
        scan_segment(PATH, bytes(data), last=True)
    assert info.value.offset == USED + 100
    assert "after the end" in info.value.reason


def test_a_file_without_a_segment_header_is_corruption() -> None:
    for data in (b"", bytes(PREALLOC_BYTES), SEGMENT[: SPANS[0][1] - 1]):
        with pytest.raises(CorruptFileError) as info:
            scan_segment(PATH, data, last=True)
        assert info.value.offset == 0
    second, _ = frame(PAYLOADS[1:], 0)  # records, but not starting with a SEGMENT record
    with pytest.raises(CorruptFileError):
        scan_segment(PATH, second + bytes(64), last=True)


def test_a_second_segment_header_is_corruption() -> None:
    data, _ = frame([*PAYLOADS, PAYLOADS[0]], 0)
    with pytest.raises(CorruptFileError) as info:
        scan_segment(PATH, data, last=True)
    assert info.value.offset == USED


def test_an_undecodable_segment_header_is_corruption() -> None:
    data, _ = frame([(RECORD_SEGMENT, b"\xff\xff\xff")], 0)
    with pytest.raises(CorruptFileError) as info:
        scan_segment(PATH, data + bytes(64), last=True)
    assert info.value.offset == 0
    assert "undecodable" in info.value.reason
