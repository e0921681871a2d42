"""The frame codec alone (sans-I/O): hand-encoded frames equal protobuf's encoding, and the
decoder gives the same frames whether bytes arrive whole, byte by byte or in random cuts."""

from __future__ import annotations

import random
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from petcd.errors import FrameError
from petcd.pb import transport_pb2 as tpb
from petcd.pb.raft_pb2 import MSG_APP, Entry, Message
from petcd.transport.frame import (
    LENGTH,
    FrameDecoder,
    batch_frame,
    chunk_frame_head,
    frame_bytes,
    item_head,
    varint,
)


def _encode_varint_reference(value: int) -> bytes:
    # protobuf's own encoding of a uint64 field 1, minus the tag byte
    return tpb.SnapshotChunk(offset=value).SerializeToString()[1:]


@given(st.integers(min_value=1, max_value=2**64 - 1))
def test_varint_matches_protobuf(value: int) -> None:
    assert varint(value) == _encode_varint_reference(value)


def _message(i: int, size: int) -> Message:
    return Message(
        type=MSG_APP, to=2, from_=1, term=i + 1, entries=[Entry(index=i + 1, data=b"d" * size)]
    )


def _batch(messages: list[Message]) -> bytes:
    items: list[bytes] = []
    total = 0
    for m in messages:
        data = m.SerializeToString()
        head = item_head(len(data))
        items += [head, data]
        total += len(head) + len(data)
    return batch_frame(items, total)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=20_000), min_size=1, max_size=20))
def test_batch_frame_is_protobufs_encoding(sizes: list[int]) -> None:
    messages = [_message(i, n) for i, n in enumerate(sizes)]
    expected = tpb.Frame(batch=tpb.Batch(messages=messages)).SerializeToString()
    frame = _batch(messages)
    assert frame == LENGTH.pack(len(expected)) + expected
    decoded = tpb.Frame.FromString(frame[4:])
    assert list(decoded.batch.messages) == messages


@pytest.mark.parametrize("size", [1, 127, 128, 1 << 20])
def test_chunk_frame_is_protobufs_encoding(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    crc = zlib.crc32(data)
    offset = 5 << 30
    head = chunk_frame_head(offset, crc, len(data))
    chunk = tpb.SnapshotChunk(offset=offset, crc32=crc, data=data)
    expected = tpb.Frame(snapshot_chunk=chunk).SerializeToString()
    assert head + data == LENGTH.pack(len(expected)) + expected


def _stream(count: int, seed: int) -> tuple[bytes, list[bytes]]:
    rng = random.Random(seed)
    payloads = [rng.randbytes(rng.choice([1, 5, 300, 70_000])) for _ in range(count)]
    return b"".join(frame_bytes(p) for p in payloads), payloads


def test_decoder_whole_then_byte_by_byte() -> None:
    stream, payloads = _stream(20, seed=1)
    assert FrameDecoder().feed(stream) == payloads
    decoder = FrameDecoder()
    got: list[bytes] = []
    for i in range(len(stream)):
        got += decoder.feed(stream[i : i + 1])
    assert got == payloads
    assert decoder.buffered_bytes == 0


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=2**32), st.lists(st.integers(1, 50_000), max_size=30))
def test_decoder_random_cuts(seed: int, cuts: list[int]) -> None:
    stream, payloads = _stream(10, seed)
    decoder = FrameDecoder()
    got: list[bytes] = []
    position = 0
    for cut in cuts:
        got += decoder.feed(stream[position : position + cut])
        position += cut
    got += decoder.feed(stream[position:])
    assert got == payloads


def test_decoder_rejects_oversized_length_before_buffering() -> None:
    decoder = FrameDecoder(frame_bytes_max=1000)
    assert decoder.feed(frame_bytes(b"a" * 1000)) == [b"a" * 1000]
    with pytest.raises(FrameError, match="exceeds the limit"):
        decoder.feed(LENGTH.pack(1001))  # only the length prefix: rejected at once
    assert decoder.buffered_bytes == 0


def test_decoder_rejects_empty_frame() -> None:
    with pytest.raises(FrameError, match="empty frame"):
        FrameDecoder().feed(LENGTH.pack(0))


def test_decoder_keeps_a_partial_frame() -> None:
    decoder = FrameDecoder()
    frame = frame_bytes(b"hello")
    assert decoder.feed(frame + frame[:3]) == [b"hello"]
    assert decoder.buffered_bytes == 3
    assert decoder.feed(frame[3:]) == [b"hello"]
