"""Frames on a peer connection: encoding, and a pure decoder that cuts a byte stream into frames.

No I/O here. A frame is a 4-byte big-endian length followed by that many bytes of one encoded
`transportpb.Frame` (proto/petcd/pb/transport.proto). The decoder checks the length against a
limit BEFORE buffering the frame, so a peer cannot make us hold more than
`frame_bytes_max + 4` bytes plus one read.

Batch frames are encoded by hand: the sender serialises each raft message once, when `send()`
is called, and the frame is the concatenation of those bytes with protobuf field headers around
them. The result is byte-for-byte what `Frame(batch=Batch(messages=[...])).SerializeToString()`
produces, so the receiver parses it with the generated code in one call.

Worked example: a batch of two messages whose encodings are 5 and 130 bytes long:

    00 00 00 8f          frame length: 143 bytes follow
    1a 8c 01             Frame field 3 (batch), wire type 2, length 140 (varint 8c 01)
    0a 05 <5 bytes>      Batch field 1 (messages), length 5
    0a 82 01 <130 bytes> Batch field 1 (messages), length 130 (varint 82 01)

Snapshot chunks are encoded the same way (`chunk_frame_head`): everything before the data
bytes is built here, and the caller writes the data after it without copying it.

Invariants:
- `encoded_bytes(parts)` equals the length of the frame built from them (checked by assert);
- the decoder never returns a frame longer than `frame_bytes_max` and never buffers a length
  prefix it has rejected: after a FrameError the decoder is unusable (the connection closes).
"""

from __future__ import annotations

import struct

from petcd.errors import FrameError
from petcd.wire import varint

LENGTH = struct.Struct(">I")
LENGTH_BYTES = LENGTH.size
#: The default limit on one frame: a raft message of max-request-bytes (1.5 MiB) fits with a
#: wide margin; batches are cut to stay below it.
FRAME_BYTES_MAX_DEFAULT = 16 * 1024 * 1024
#: Protobuf tag bytes (field number << 3 | wire type 2) used by the hand encoders.
TAG_FRAME_BATCH = b"\x1a"  # Frame.batch = 3
TAG_FRAME_CHUNK = b"\x2a"  # Frame.snapshot_chunk = 5
TAG_BATCH_MESSAGE = b"\x0a"  # Batch.messages = 1
TAG_CHUNK_OFFSET = b"\x08"  # SnapshotChunk.offset = 1 (varint)
TAG_CHUNK_CRC = b"\x10"  # SnapshotChunk.crc32 = 2 (varint)
TAG_CHUNK_DATA = b"\x1a"  # SnapshotChunk.data = 3
#: Bytes a message adds to a batch beyond its own encoding, at most (tag + 5-byte varint).
ITEM_OVERHEAD_BYTES_MAX = 6
#: Bytes of the frame prefix of a batch, at most (length + tag + 5-byte varint).
BATCH_OVERHEAD_BYTES_MAX = LENGTH_BYTES + 6


def item_head(encoded_message_bytes: int) -> bytes:
    """What goes before one encoded raft message inside a batch."""
    return TAG_BATCH_MESSAGE + varint(encoded_message_bytes)


def batch_frame(items: list[bytes], items_bytes: int) -> bytes:
    """A whole batch frame from `items` (alternating item heads and encoded messages)."""
    assert items, "an empty batch is never sent"
    assert len(items) % 2 == 0
    body_head = TAG_FRAME_BATCH + varint(items_bytes)
    frame_bytes = len(body_head) + items_bytes
    out = b"".join([LENGTH.pack(frame_bytes), body_head, *items])
    assert len(out) == LENGTH_BYTES + frame_bytes, "items_bytes does not match the items"
    return out


def chunk_frame_head(offset: int, crc32: int, data_bytes: int) -> bytes:
    """Length prefix and encoded fields of a SnapshotChunk frame, up to its data bytes."""
    assert offset >= 0
    assert 0 <= crc32 < 1 << 32
    chunk_head = b"".join(
        [
            TAG_CHUNK_OFFSET,
            varint(offset),
            TAG_CHUNK_CRC,
            varint(crc32),
            TAG_CHUNK_DATA,
            varint(data_bytes),
        ]
    )
    chunk_bytes = len(chunk_head) + data_bytes
    body_head = TAG_FRAME_CHUNK + varint(chunk_bytes)
    frame_bytes = len(body_head) + chunk_bytes
    return b"".join([LENGTH.pack(frame_bytes), body_head, chunk_head])


def frame_bytes(payload: bytes) -> bytes:
    """A frame around an already encoded transportpb.Frame."""
    assert len(payload) < 1 << 32
    return LENGTH.pack(len(payload)) + payload


class FrameDecoder:
    """Cuts a byte stream into frame payloads (encoded transportpb.Frame messages).

    Payloads are returned as memoryviews over the bytes fed in (or over one join of them), so
    a large frame that arrives in many reads is copied exactly once, when its last piece
    arrives; protobuf parses memoryviews directly.

    Invariants: `_pieces` never holds a complete frame between calls to `feed`; it holds at
    most `frame_bytes_max + LENGTH_BYTES` bytes plus the last piece fed; `_need` is the number
    of bytes `_pieces` must reach before it is worth looking at again.
    """

    __slots__ = ("_buffered", "_failed", "_need", "_pieces", "frame_bytes_max")

    def __init__(self, frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT) -> None:
        assert frame_bytes_max > 0
        self.frame_bytes_max = frame_bytes_max
        self._pieces: list[bytes | memoryview] = []
        self._buffered = 0
        self._need = 0
        self._failed = False

    @property
    def buffered_bytes(self) -> int:
        return self._buffered

    def feed(self, data: bytes) -> list[memoryview]:
        """Every frame payload completed by `data`, in order; raises FrameError on a bad length."""
        assert not self._failed, "a decoder that raised FrameError must not be fed again"
        if self._pieces:
            self._pieces.append(data)
            self._buffered += len(data)
            if self._buffered < self._need:
                return []
            data = b"".join(self._pieces)
            self._pieces = []
            self._buffered = 0
        view = memoryview(data)
        frames, used = self._cut(view)
        if used < len(view):
            rest = view[used:]
            self._pieces = [rest]
            self._buffered = len(rest)
            self._need = self._frame_end(rest) if len(rest) >= LENGTH_BYTES else LENGTH_BYTES
            assert self._need > self._buffered
        return frames

    def _frame_end(self, view: memoryview) -> int:
        (length,) = LENGTH.unpack_from(view, 0)
        return LENGTH_BYTES + int(length)

    def _cut(self, view: memoryview) -> tuple[list[memoryview], int]:
        frames: list[memoryview] = []
        position = 0
        end = len(view)
        limit = self.frame_bytes_max
        unpack = LENGTH.unpack_from
        while end - position >= LENGTH_BYTES:
            (length,) = unpack(view, position)
            if length > limit:
                self._failed = True
                raise FrameError(f"frame of {length} bytes exceeds the limit of {limit}")
            if length == 0:
                self._failed = True
                raise FrameError("empty frame")
            stop = position + LENGTH_BYTES + length
            if stop > end:
                break
            frames.append(view[position + LENGTH_BYTES : stop])
            position = stop
        assert position <= end
        return frames, position
