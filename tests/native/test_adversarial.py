"""Bad input over raw sockets: each gets the HTTP/2 or gRPC answer a well-behaved server gives,
the connection or stream closes as appropriate, state stays bounded, and other clients never
notice (every test ends with a normal call through grpcio)."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import grpc

from petcd.pb import rpc_pb2
from tests.native import h2raw
from tests.native.conftest import SERVICE, Running
from tests.native.h2raw import DATA, END_HEADERS, END_STREAM, HEADERS, RST_STREAM, frame

ECHO = f"/{SERVICE}/Echo"


def assert_others_fine(native: Running) -> None:
    with grpc.insecure_channel(native.endpoint) as channel:
        echo = channel.unary_unary(
            ECHO,
            request_serializer=rpc_pb2.RangeRequest.SerializeToString,
            response_deserializer=rpc_pb2.RangeResponse.FromString,
        )
        assert echo(rpc_pb2.RangeRequest(key=b"ok"), timeout=5).kvs[0].key == b"ok"


def request(sid: int, payload: bytes, path: str = ECHO, end: bool = True) -> bytes:
    return frame(HEADERS, END_HEADERS, sid, h2raw.grpc_headers(path)) + frame(
        DATA, END_STREAM if end else 0, sid, payload
    )


def trailers_only(frames: list[h2raw.Frame], sid: int) -> bool:
    """The stream was answered by one HEADERS frame with END_STREAM and no DATA."""
    mine = h2raw.on_stream(frames, sid)
    return (
        len([f for f in mine if f.kind == HEADERS]) == 1
        and bool(mine[0].flags & END_STREAM)
        and not any(f.kind == DATA for f in mine)
    )


def test_garbage_preface_is_closed(native: Running) -> None:
    client = h2raw.RawClient(native.port, handshake=False)
    client.send(b"\x16\x03\x01\x02\x00garbage-not-http2-at-all" * 4)
    client.wait_closed()
    assert client.frames == []
    assert_others_fine(native)


def test_http1_gets_a_minimal_answer_and_close(native: Running) -> None:
    with socket.create_connection(("127.0.0.1", native.port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 404 ")
    assert b"Connection: close" in data
    assert_others_fine(native)


def test_slowloris_without_settings_is_closed(native: Running) -> None:
    client = h2raw.RawClient(native.port, handshake=False)
    client.send(h2raw.PREFACE[:10])  # then nothing: the handshake timer (0.5 s) closes it
    started = time.monotonic()
    client.wait_closed(timeout=5)
    assert time.monotonic() - started < 4
    assert_others_fine(native)


def test_unanswered_keepalive_pings_close_the_connection(native: Running) -> None:
    client = h2raw.RawClient(native.port)
    client.sock.settimeout(6)
    data = b""
    started = time.monotonic()
    while chunk := client.sock.recv(65536):  # read, but never acknowledge a PING
        data += chunk
    frames, _ = h2raw.parse_frames(data)
    assert any(f.kind == h2raw.PING for f in frames)
    assert time.monotonic() - started < 5.5
    assert_others_fine(native)


def test_malformed_frames_get_goaway_with_the_right_code(native: Running) -> None:
    cases = [
        (frame(DATA, 0, 0, b"x"), h2raw.PROTOCOL_ERROR),  # DATA on stream 0
        (frame(h2raw.SETTINGS, 0, 0, b"\x00\x01\x00"), h2raw.FRAME_SIZE_ERROR),  # not 6n bytes
        (frame(HEADERS, END_HEADERS, 1, b"\xff\xff\xff\xff\xff"), h2raw.COMPRESSION_ERROR),
        (frame(DATA, 0, 1, b"y" * 20000), h2raw.FRAME_SIZE_ERROR),  # over SETTINGS_MAX_FRAME
        (frame(h2raw.WINDOW_UPDATE, 0, 0, struct.pack(">I", 0)), h2raw.PROTOCOL_ERROR),
        (frame(HEADERS, END_HEADERS, 2, h2raw.grpc_headers(ECHO)), h2raw.PROTOCOL_ERROR),  # even id
    ]
    for bad, code in cases:
        client = h2raw.RawClient(native.port)
        client.send(bad)
        frames = client.read_until(lambda fs: h2raw.goaway(fs) is not None)
        goaway = h2raw.goaway(frames)
        assert goaway is not None and goaway.error_code == code, (bad[:12], frames)
        client.wait_closed()
        client.close()
    assert_others_fine(native)


def test_grpc_level_errors_are_trailers_only_and_keep_the_connection(native: Running) -> None:
    ok = h2raw.grpc_message(rpc_pb2.RangeRequest(key=b"x").SerializeToString())
    client = h2raw.RawClient(native.port)
    client.send(request(1, ok, path=f"/{SERVICE}/Missing"))  # unknown method
    client.send(request(3, h2raw.grpc_message(b"abc", length=100)))  # length prefix lies
    client.send(request(5, h2raw.grpc_message(b"abc", flag=1)))  # compressed, no encoding
    client.send(request(7, h2raw.grpc_message(b"", length=1 << 30, flag=0)))  # 1 GiB claimed
    client.send(request(9, ok + ok))  # two messages on a unary call
    client.send(frame(HEADERS, END_HEADERS | END_STREAM, 11, h2raw.grpc_headers(ECHO)))  # none
    client.send(request(13, h2raw.grpc_message(b"\xff\xff\xff")))  # does not parse
    client.send(request(15, ok))  # and a good one, still answered on the same connection
    frames = client.read_until(lambda fs: all(h2raw.stream_ended(fs, s) for s in range(1, 16, 2)))
    for sid in range(1, 14, 2):
        assert trailers_only(frames, sid), (sid, h2raw.on_stream(frames, sid))
    assert any(f.kind == DATA for f in h2raw.on_stream(frames, 15))
    assert h2raw.goaway(frames) is None
    client.close()
    assert_others_fine(native)


def test_message_cut_off_by_rst_stream_is_dropped(native: Running) -> None:
    client = h2raw.RawClient(native.port)
    client.send(request(1, h2raw.grpc_message(b"a" * 10, length=5000), end=False))
    client.send(frame(RST_STREAM, 0, 1, struct.pack(">I", 8)))  # CANCEL mid-message
    client.send(request(3, h2raw.grpc_message(rpc_pb2.RangeRequest(key=b"z").SerializeToString())))
    frames = client.read_until(lambda fs: h2raw.stream_ended(fs, 3))
    assert not h2raw.on_stream(frames, 1)  # nothing answered to the cancelled stream
    assert native.streams() == 0
    assert native.call(lambda: sum(len(c.calls) for c in native.server.connections)) == 0
    client.close()
    assert_others_fine(native)


def test_oversized_headers_refuse_the_stream_only(native: Running) -> None:
    client = h2raw.RawClient(native.port)
    block = h2raw.grpc_headers(ECHO, [("x-big", "v" * 15000)] * 6)  # 90 KB of metadata
    chunks = [block[i : i + 16000] for i in range(0, len(block), 16000)]
    client.send(frame(HEADERS, 0, 1, chunks[0]))
    for i, chunk in enumerate(chunks[1:], 1):
        client.send(frame(h2raw.CONTINUATION, END_HEADERS if i == len(chunks) - 1 else 0, 1, chunk))
    client.send(frame(DATA, END_STREAM, 1, h2raw.grpc_message(b"")))
    frames = client.read_until(lambda fs: h2raw.stream_ended(fs, 1) or h2raw.goaway(fs) is not None)
    assert trailers_only(frames, 1)  # RESOURCE_EXHAUSTED for this stream
    assert h2raw.goaway(frames) is None  # the connection lives on
    client.close()
    assert_others_fine(native)


def test_thousands_of_abandoned_streams_stay_bounded(native: Running) -> None:
    client = h2raw.RawClient(native.port)
    headers = h2raw.grpc_headers(ECHO)
    burst = b"".join(frame(HEADERS, END_HEADERS, sid, headers) for sid in range(1, 6001, 2))
    client.send(burst)  # 3000 streams opened, never finished
    frames = client.read_until(lambda fs: any(f.kind in (RST_STREAM, h2raw.GOAWAY) for f in fs))
    assert native.streams() <= 1000  # SETTINGS_MAX_CONCURRENT_STREAMS of the fixture
    refused = [f for f in frames if f.kind in (RST_STREAM, h2raw.GOAWAY)]
    assert refused
    client.close()
    deadline = time.monotonic() + 5
    while native.streams() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert native.streams() == 0  # the connection's streams went with it
    assert_others_fine(native)


def test_shutdown_sends_goaway_and_answers_calls_in_flight(native: Running) -> None:
    client = h2raw.RawClient(native.port)
    client.send(
        request(1, h2raw.grpc_message(rpc_pb2.RangeRequest(key=b"slow").SerializeToString()))
    )
    deadline = time.monotonic() + 5
    while native.streams() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    stopping = asyncio.run_coroutine_threadsafe(native.server.stop(0.2), native.loop)
    frames = client.read_until(
        lambda fs: h2raw.goaway(fs) is not None and h2raw.stream_ended(fs, 1)
    )
    goaway = h2raw.goaway(frames)
    assert goaway is not None and goaway.error_code == 0
    assert int.from_bytes(goaway.payload[:4], "big") == 1  # the last stream we processed
    assert trailers_only(frames, 1)  # the cut call got a status (UNAVAILABLE), not silence
    stopping.result(10)
    client.wait_closed()
    assert native.probe.cancelled.is_set()


def test_a_client_that_never_reads_its_socket_is_held_by_backpressure(native: Running) -> None:
    """Windows wide open but the socket never read: the kernel buffer fills, the transport
    pauses, the handler's sends wait; the server does not buffer the 128 MiB asked for."""
    client = h2raw.RawClient(native.port, window=(1 << 31) - 1)
    client.send(frame(h2raw.WINDOW_UPDATE, 0, 0, struct.pack(">I", (1 << 31) - 1 - 65535)))
    flood = rpc_pb2.RangeRequest(key=b"flood", limit=2000).SerializeToString()
    client.send(request(1, h2raw.grpc_message(flood), path=f"/{SERVICE}/Stream"))
    deadline = time.monotonic() + 10
    previous = -1
    while time.monotonic() < deadline:  # until the handler stops making progress
        sent = native.call(lambda: native.probe.flood_sent)
        if sent == previous and sent > 0:
            break
        previous = sent
        time.sleep(0.2)
    sent = native.call(lambda: native.probe.flood_sent)
    assert 0 < sent < 400, sent  # at most socket buffers + 256 KiB queued
    assert_others_fine(native)
    client.close()


def test_grpc_timeout_zero_expires_at_once_and_garbage_is_refused(native: Running) -> None:
    slow = h2raw.grpc_message(rpc_pb2.RangeRequest(key=b"slow").SerializeToString())
    client = h2raw.RawClient(native.port)
    for sid, timeout in ((1, "0S"), (3, "12x"), (5, "123456789S")):
        headers = h2raw.grpc_headers(ECHO, [("grpc-timeout", timeout)])
        client.send(frame(HEADERS, END_HEADERS, sid, headers) + frame(DATA, END_STREAM, sid, slow))
    started = time.monotonic()
    frames = client.read_until(lambda fs: all(h2raw.stream_ended(fs, s) for s in (1, 3, 5)))
    assert time.monotonic() - started < 5  # the handler (30 s) was cut short or never run
    for sid in (1, 3, 5):
        assert trailers_only(frames, sid), h2raw.on_stream(frames, sid)
    client.close()
    assert_others_fine(native)
