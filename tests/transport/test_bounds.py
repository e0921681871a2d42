"""Bounds and bad input: a peer that never reads cannot grow our memory or stall other peers;
malformed frames close the connection without harming the transport."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest

from petcd.pb import transport_pb2 as tpb
from petcd.transport import TransportLimits
from petcd.transport.frame import LENGTH, FrameDecoder, frame_bytes
from tests.transport.helpers import CLUSTER, Member, MemberFactory, append, connect, eventually

KIB = 1024
MIB = 1024 * KIB


class StuckPeer:
    """Says a correct HelloAck, then never reads another byte (tiny receive buffer)."""

    def __init__(self, member_id: int) -> None:
        self.member_id = member_id
        self.accepted = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.url = ""
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited when accepted
        sock.bind(("127.0.0.1", 0))
        self._server = await asyncio.start_server(self._handle, sock=sock)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.writers.append(writer)
        decoder = FrameDecoder()
        frames: list[bytes] = []
        while not frames:
            data = await reader.read(64)  # exactly enough to get the hello, not more
            if not data:
                return
            frames = decoder.feed(data)
        hello = tpb.Frame.FromString(frames[0]).hello
        ack = tpb.HelloAck(protocol_version=1, member_id=self.member_id, cluster_id=CLUSTER)
        writer.write(frame_bytes(tpb.Frame(hello_ack=ack).SerializeToString()))
        assert hello.to == self.member_id

    async def stop(self) -> None:
        for writer in self.writers:
            writer.close()
        assert self._server is not None
        self._server.close()


@pytest.fixture
async def stuck() -> AsyncIterator[StuckPeer]:
    peer = StuckPeer(2)
    await peer.start()
    yield peer
    await peer.stop()


SMALL = TransportLimits(
    frame_bytes_max=256 * KIB,
    snapshot_chunk_bytes=128 * KIB,
    queue_bytes_max=1 * MIB,
    write_buffer_high_bytes=256 * KIB,
    write_stall_timeout_s=60.0,
)


async def test_peer_that_never_reads(members: MemberFactory, stuck: StuckPeer) -> None:
    a = await members(1, limits=SMALL)
    good = await members(3)
    await connect(a, good)
    a.t.add_peer(2, [stuck.url])
    await eventually(lambda: a.t.active_since(2) is not None)
    sent_to_good = 0
    peak = 0
    for i in range(2000):  # until well after the stuck peer's queue filled up
        a.t.send([append(1, 2, index=i * 10 + k + 1, data=b"s" * 1000) for k in range(10)])
        a.t.send([append(1, 3, index=sent_to_good + k + 1) for k in range(10)])
        sent_to_good += 10
        await asyncio.sleep(0)
        peak = max(peak, a.t.queued_bytes(2))
        if a.t.stats[2].send_failures > 2000:
            break
    assert a.t.stats[2].send_failures > 2000, "the stuck peer's queue never filled"
    # memory held for the stuck peer stays within queue + socket buffer high-water + one flush
    assert peak <= SMALL.queue_bytes_max + SMALL.write_buffer_high_bytes + SMALL.queue_bytes_max
    await a.wait(lambda: 2 in a.unreachable)
    assert 3 not in a.unreachable
    # the good peer got every message, in order, meanwhile
    await good.wait(lambda: len(good.messages) == sent_to_good)
    assert [m.index for m in good.messages] == list(range(sent_to_good))
    assert a.t.stats[3].send_failures == 0


async def test_stalled_connection_is_closed_and_redialled(
    members: MemberFactory, stuck: StuckPeer
) -> None:
    limits = TransportLimits(
        frame_bytes_max=256 * KIB,
        snapshot_chunk_bytes=128 * KIB,
        queue_bytes_max=1 * MIB,
        write_buffer_high_bytes=64 * KIB,
        write_stall_timeout_s=0.3,
        backoff_initial_s=0.01,
        backoff_max_s=0.05,
    )
    a = await members(1, limits=limits)
    a.t.add_peer(2, [stuck.url])
    await eventually(lambda: a.t.active_since(2) is not None)
    for i in range(3000):  # fill the kernel and socket buffers until writing pauses
        a.t.send([append(1, 2, index=i * 10 + k + 1, data=b"s" * 1000) for k in range(10)])
        await asyncio.sleep(0)
        if a.t.stats[2].send_failures:
            break
    await eventually(lambda: a.t.stats[2].connects >= 2)  # stall timeout, then a new link
    assert stuck.accepted >= 2


async def _rejected(url: str, data: bytes) -> bytes:
    """Send raw bytes to a listener; return what came back before it closed on us."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    received = b""
    with contextlib.suppress(ConnectionError):
        async with asyncio.timeout(5):
            while chunk := await reader.read(65536):
                received += chunk
    writer.close()
    return received


def _frame(frame: tpb.Frame) -> bytes:
    return frame_bytes(frame.SerializeToString())


def _hello(kind: int, member_id: int = 7) -> bytes:
    hello = tpb.Hello(protocol_version=1, kind=kind, member_id=member_id, cluster_id=CLUSTER, to=1)  # type: ignore[arg-type]
    return _frame(tpb.Frame(hello=hello))


async def test_malformed_input_closes_only_that_connection(members: MemberFactory) -> None:
    a = await members(1, limits=TransportLimits(hello_timeout_s=0.2))
    batch = tpb.Frame(batch=tpb.Batch(messages=[append(7, 1, index=1)]))
    bad_inputs = [
        LENGTH.pack(2**31) + b"x" * 100,  # absurd length
        LENGTH.pack(0),  # empty frame
        LENGTH.pack(5) + b"\xff\xff\xff\xff\xff",  # not a protobuf message
        frame_bytes(b"\x08\x01"),  # a Frame with an unknown field and no body
        _frame(batch),  # no hello first
        _hello(tpb.STREAM_MESSAGES) + LENGTH.pack(2) + b"\x0a\x01",  # hello, then garbage
        _hello(tpb.STREAM_MESSAGES) + _frame(tpb.Frame(hello_ack=tpb.HelloAck())),  # wrong frame
        _hello(tpb.STREAM_RPC) + _frame(batch),  # a batch on an RPC stream
        _hello(tpb.STREAM_SNAPSHOT) + _frame(batch),  # no snapshot header
        _hello(0),  # unknown stream kind: refused with an answer
        b"",  # silence: closed after hello_timeout_s
    ]
    for data in bad_inputs:
        await _rejected(a.url, data)
    assert a.messages == []
    # the transport is unharmed: a real peer connects and delivers
    b = await members(2)
    await connect(a, b)
    b.t.send([append(2, 1, index=5)])
    await a.wait(lambda: len(a.messages) == 1)


async def test_refusals_are_answered(members: MemberFactory) -> None:
    a = await members(1)
    answer = await _rejected(a.url, _hello(0))
    ack = tpb.Frame.FromString(FrameDecoder().feed(answer)[0]).hello_ack
    assert ack.refusal == tpb.REFUSAL_BAD_HELLO
    wrong_version = tpb.Hello(protocol_version=9, kind=tpb.STREAM_RPC)
    answer = await _rejected(a.url, _frame(tpb.Frame(hello=wrong_version)))
    ack = tpb.Frame.FromString(FrameDecoder().feed(answer)[0]).hello_ack
    assert ack.refusal == tpb.REFUSAL_PROTOCOL_VERSION
    assert ack.member_id == 1 and ack.cluster_id == CLUSTER


async def test_inbound_connections_are_capped(members: MemberFactory) -> None:
    a: Member = await members(1, limits=TransportLimits(inbound_connections_max=2))
    host, port = a.url.removeprefix("http://").rsplit(":", 1)
    held = [await asyncio.open_connection(host, int(port)) for _ in range(2)]
    await eventually(lambda: len(a.t._inbound) == 2)
    reader, writer = await asyncio.open_connection(host, int(port))
    async with asyncio.timeout(5):
        with contextlib.suppress(ConnectionError):
            assert await reader.read() == b""  # closed at once
    writer.close()
    for _, w in held:
        w.close()
