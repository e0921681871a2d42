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

_SMALL_VARINTS = [bytes([n]) for n in range(128)]


def varint(value: int) -> bytes:
    """The protobuf varint encoding of a non-negative integer."""
    assert value >= 0
    if value < 128:
        return _SMALL_VARINTS[value]
    out = bytearray()
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    assert len(out) <= 10
    return bytes(out)


def item_head(encoded_message_bytes: int) -> bytes:
    """What goes before one encoded raft message inside a batch."""
    if encoded_message_bytes < 128:
        return TAG_BATCH_MESSAGE + _SMALL_VARINTS[encoded_message_bytes]
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

    Invariant: `_buffer` holds no complete frame between calls to `feed`, and never more than
    `frame_bytes_max + LENGTH_BYTES` bytes plus the last piece fed.
    """

    __slots__ = ("_buffer", "_failed", "frame_bytes_max")

    def __init__(self, frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT) -> None:
        assert frame_bytes_max > 0
        self.frame_bytes_max = frame_bytes_max
        self._buffer = bytearray()
        self._failed = False

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Every frame payload completed by `data`, in order; raises FrameError on a bad length."""
        assert not self._failed, "a decoder that raised FrameError must not be fed again"
        buffer = self._buffer
        if not buffer:
            frames, used = self._cut(data)
            if used < len(data):
                buffer += data[used:] if used else data
            return frames
        buffer += data
        frames, used = self._cut(buffer)
        if used:
            del buffer[:used]
        return frames

    def _cut(self, data: bytes | bytearray) -> tuple[list[bytes], int]:
        frames: list[bytes] = []
        position = 0
        end = len(data)
        limit = self.frame_bytes_max
        unpack = LENGTH.unpack_from
        while end - position >= LENGTH_BYTES:
            (length,) = unpack(data, position)
            if length > limit:
                self._failed = True
                raise FrameError(f"frame of {length} bytes exceeds the limit of {limit}")
            if length == 0:
                self._failed = True
                raise FrameError("empty frame")
            stop = position + LENGTH_BYTES + length
            if stop > end:
                break
            frames.append(bytes(data[position + LENGTH_BYTES : stop]))
            position = stop
        assert position <= end
        return frames, position
