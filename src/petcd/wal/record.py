"""Record framing of WAL segments: encoding, and a pure scanner that verifies a whole segment.

No I/O here: `frame` turns (type, payload) pairs into bytes, `scan_segment` turns the bytes of
one segment file into its records or a typed error. The WAL does the reading and writing.

Layout of one record (little-endian, every record starts at a multiple of 8):

    offset  size  field
    0       4     header_crc  CRC-32 of bytes 4..15 of this header
    4       4     length      payload length in bytes (padding not included)
    8       1     type        walpb.RecordType, never 0
    9       3     reserved    zero
    12      4     data_crc    CRC-32 of the payload, chained: seeded with the previous record's
                              data_crc (0 for the first record of a segment)
    16      n     payload     protobuf bytes (see walpb.RecordType for which message)
    16+n    p     padding     zero bytes, p = (-n) mod 8, so the next record is 8-aligned

Worked example: a record after one whose data_crc was 0x6eec9b9f, holding
HardState(term=2, vote=1, commit=5) (payload 08 02 10 01 18 05: six bytes, two of padding):

    7c 86 b7 6f  06 00 00 00  03 00 00 00  ed 8b fd 10  08 02 10 01 18 05  00 00
    header_crc   length=6     type=3       data_crc     payload            pad
    = crc32 of                (HARD_STATE) = crc32(payload, 0x6eec9b9f)
    the next 12 bytes

A segment is one SEGMENT record (walpb.SegmentHeader) followed by ENTRIES, HARD_STATE and
SNAPSHOT records, then zeros up to the preallocated size.

Why two CRCs: the header CRC makes the length trustworthy before it is used, so a damaged length
can never make the scanner skip over good records or misjudge where a record ends; the chained
data CRC catches a damaged payload and a record that is out of place (copied, reordered, left
from an older write). An all-zero header is never a valid record (type 0 is invalid and its
header CRC would not match), so the preallocated zero tail is told apart from records.

Invariants of `scan_segment` (what it promises to the WAL):
  - every record it returns passed both CRCs and has a known type; the first is the SEGMENT
    record and no other record is a SEGMENT record;
  - after the returned records, the file holds only zeros, or (only when `last` is true) one
    torn record followed by zeros: a record that is cut short or fails a CRC with nothing but
    zeros after it. That is what a crash in the middle of an unsynced write leaves behind;
  - anything else raises CorruptFileError with the file and the offset of the bad record.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

from petcd.errors import CorruptFileError
from petcd.pb import wal_pb2

HEADER_BYTES = 16
ALIGN_BYTES = 8
# A save's entries are split into records of about this size, so no record grows without bound.
ENTRIES_RECORD_BYTES_TARGET = 4 * 1024 * 1024
# Largest payload the writer produces (one oversized entry); the reader rejects larger lengths.
PAYLOAD_BYTES_MAX = 256 * 1024 * 1024
FRAMING_VERSION = 1

RECORD_SEGMENT = wal_pb2.RECORD_SEGMENT
RECORD_ENTRIES = wal_pb2.RECORD_ENTRIES
RECORD_HARD_STATE = wal_pb2.RECORD_HARD_STATE
RECORD_SNAPSHOT = wal_pb2.RECORD_SNAPSHOT
RECORD_TYPES = frozenset({RECORD_SEGMENT, RECORD_ENTRIES, RECORD_HARD_STATE, RECORD_SNAPSHOT})

_HEADER = struct.Struct("<IIB3xI")  # header_crc, length, type, (reserved), data_crc
_HEADER_TAIL = struct.Struct("<IB3xI")  # the bytes the header CRC covers
_ZERO_HEADER = bytes(HEADER_BYTES)
_ZERO_CHUNK = bytes(1 << 20)
_PADDING = [bytes(n) for n in range(ALIGN_BYTES)]
assert _HEADER.size == HEADER_BYTES
assert _HEADER_TAIL.size == HEADER_BYTES - 4


def framed_bytes(payload_bytes: int) -> int:
    """Bytes one record with a payload of `payload_bytes` takes on disk."""
    assert 0 <= payload_bytes <= PAYLOAD_BYTES_MAX
    return HEADER_BYTES + payload_bytes + (-payload_bytes % ALIGN_BYTES)


def frame(records: Sequence[tuple[int, bytes]], crc: int) -> tuple[bytes, int]:
    """Encode records after a record whose data_crc is `crc`: (the bytes, the new chain CRC)."""
    assert records, "framing nothing is a caller bug"
    assert 0 <= crc <= 0xFFFFFFFF
    parts: list[bytes] = []
    for rtype, payload in records:
        length = len(payload)
        assert rtype in RECORD_TYPES, rtype
        assert length <= PAYLOAD_BYTES_MAX, length
        crc = zlib.crc32(payload, crc)
        tail = _HEADER_TAIL.pack(length, rtype, crc)
        parts.append(struct.pack("<I", zlib.crc32(tail)))
        parts.append(tail)
        parts.append(payload)
        parts.append(_PADDING[-length % ALIGN_BYTES])
    data = b"".join(parts)
    assert len(data) % ALIGN_BYTES == 0
    return data, crc


@dataclass(slots=True)
class Record:
    """One verified record of a segment. Invariant: `type` is in RECORD_TYPES."""

    type: int
    offset: int  # byte offset of the record's header in its file
    payload: bytes


@dataclass(slots=True)
class SegmentScan:
    """What a segment file holds. Invariant: records[0] is the SEGMENT record."""

    header: wal_pb2.SegmentHeader
    records: list[Record]  # every record after the SEGMENT record, in file order
    end_offset: int  # offset just after the last good record: where the next write goes
    crc: int  # data_crc of the last good record: the chain seed for the next write
    torn_end: int  # end of the torn bytes to zero (== end_offset when the tail is clean)


def first_nonzero(data: bytes, start: int) -> int:
    """Offset of the first non-zero byte at or after `start`, or -1 if there is none."""
    assert start >= 0
    end = len(data)
    chunk = len(_ZERO_CHUNK)
    while start < end:  # bounded: advances by up to `chunk` bytes each pass
        stop = min(end, start + chunk)
        if data[start:stop] != _ZERO_CHUNK[: stop - start]:
            piece = data[start:stop]
            return start + (len(piece) - len(piece.lstrip(b"\x00")))
        start = stop
    return -1


def scan_segment(path: str, data: bytes, last: bool) -> SegmentScan:
    """Verify one whole segment file. `last`: it is the newest segment, so a torn tail is allowed."""
    assert len(data) >= 0
    size = len(data)
    offset = 0
    crc = 0
    records: list[Record] = []
    # Bounded: each pass either consumes at least HEADER_BYTES or leaves the loop.
    while True:
        if offset + HEADER_BYTES > size or data[offset : offset + HEADER_BYTES] == _ZERO_HEADER:
            if first_nonzero(data, offset) == -1:
                return _finish(path, records, offset, crc, offset)
            if offset + HEADER_BYTES > size:
                # A few non-zero bytes at the very end: a header cut short by the end of the file.
                return _bad(path, data, records, offset, crc, size, last, "truncated record header")
            bad_at = first_nonzero(data, offset)
            raise CorruptFileError(path, bad_at, "data after the end of the records")
        header_crc, length, rtype, data_crc = _HEADER.unpack_from(data, offset)
        if zlib.crc32(data[offset + 4 : offset + HEADER_BYTES]) != header_crc:
            after = offset + HEADER_BYTES
            return _bad(path, data, records, offset, crc, after, last, "header checksum mismatch")
        if rtype not in RECORD_TYPES or length > PAYLOAD_BYTES_MAX:
            raise CorruptFileError(path, offset, f"bad record type {rtype} or length {length}")
        start = offset + HEADER_BYTES
        end = start + length + (-length % ALIGN_BYTES)
        if end > size:
            return _bad(path, data, records, offset, crc, size, last, "record cut short")
        payload = data[start : start + length]
        if zlib.crc32(payload, crc) != data_crc:
            return _bad(path, data, records, offset, crc, end, last, "record checksum mismatch")
        if data[start + length : end] != _PADDING[end - start - length]:
            raise CorruptFileError(path, offset, "non-zero record padding")
        if (rtype == RECORD_SEGMENT) != (offset == 0):
            raise CorruptFileError(path, offset, "segment header record out of place")
        records.append(Record(rtype, offset, payload))
        crc = data_crc
        offset = end


def _bad(
    path: str,
    data: bytes,
    records: list[Record],
    offset: int,
    crc: int,
    after: int,
    last: bool,
    reason: str,
) -> SegmentScan:
    """A record at `offset` is bad: a torn tail if allowed and only zeros follow, else corrupt."""
    assert offset % ALIGN_BYTES == 0
    assert after > offset
    if last and first_nonzero(data, after) == -1:
        return _finish(path, records, offset, crc, min(after, len(data)))
    raise CorruptFileError(path, offset, reason)


def _finish(path: str, records: list[Record], end: int, crc: int, torn_end: int) -> SegmentScan:
    if not records:
        raise CorruptFileError(path, 0, "no segment header record")
    assert records[0].type == RECORD_SEGMENT
    assert torn_end >= end
    try:
        header = wal_pb2.SegmentHeader.FromString(records[0].payload)
    except DecodeError as exc:
        raise CorruptFileError(path, 0, f"undecodable segment header: {exc}") from exc
    if header.version != FRAMING_VERSION:
        raise CorruptFileError(path, 0, f"unknown framing version {header.version}")
    return SegmentScan(header, records[1:], end, crc, torn_end)
