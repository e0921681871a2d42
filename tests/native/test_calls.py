"""The native front end through a real gRPC client (grpcio): every call shape and status."""

from __future__ import annotations

import os
import struct
import threading
import time

import grpc
import pytest

from petcd.pb import rpc_pb2
from tests.native import h2raw
from tests.native.conftest import MAX_REQUEST_BYTES, SERVICE, Running

REQ = rpc_pb2.RangeRequest


def _stubs(channel: grpc.Channel) -> tuple[object, object, object]:
    echo = channel.unary_unary(
        f"/{SERVICE}/Echo",
        request_serializer=REQ.SerializeToString,
        response_deserializer=rpc_pb2.RangeResponse.FromString,
    )
    stream = channel.unary_stream(
        f"/{SERVICE}/Stream",
        request_serializer=REQ.SerializeToString,
        response_deserializer=rpc_pb2.RangeResponse.FromString,
    )
    chat = channel.stream_stream(
        f"/{SERVICE}/Chat",
        request_serializer=REQ.SerializeToString,
        response_deserializer=rpc_pb2.RangeResponse.FromString,
    )
    return echo, stream, chat


def test_unary_roundtrip_and_preencoded_bytes(native: Running) -> None:
    with grpc.insecure_channel(native.endpoint) as channel:
        echo, _, _ = _stubs(channel)
        reply = echo(REQ(key=b"hello"), timeout=5)
        assert reply.kvs[0].key == b"hello" and reply.count == 5
        assert echo(REQ(key=b"bytes"), timeout=5).count == 7
        # many concurrent calls on one connection
        futures = [echo.future(REQ(key=b"k%d" % i), timeout=10) for i in range(500)]
        assert [f.result().kvs[0].key for f in futures] == [b"k%d" % i for i in range(500)]


def test_petcd_error_becomes_status_with_encoded_message(native: Running) -> None:
    with grpc.insecure_channel(native.endpoint) as channel:
        echo, _, _ = _stubs(channel)
        with pytest.raises(grpc.RpcError) as info:
            echo(REQ(key=b"fail"), timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == "petcd: käse not found %"
        with pytest.raises(grpc.RpcError) as info:
            echo(REQ(key=b"boom"), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNKNOWN
        assert "kaboom" in (info.value.details() or "")


def test_unknown_method_is_unimplemented(native: Running) -> None:
    with grpc.insecure_channel(native.endpoint) as channel:
        missing = channel.unary_unary(f"/{SERVICE}/Nope")
        with pytest.raises(grpc.RpcError) as info:
            missing(b"", timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_metadata_reaches_the_handler(native: Running) -> None:
    with grpc.insecure_channel(native.endpoint) as channel:
        echo, _, _ = _stubs(channel)
        echo(REQ(key=b"meta"), metadata=[("hasleader", "true"), ("token", "abc")], timeout=5)
    assert native.probe.metadata["hasleader"] == "true"
    assert native.probe.metadata["token"] == "abc"
    assert "content-type" not in native.probe.metadata


def test_deadline_cancels_the_handler_and_answers_deadline_exceeded(native: Running) -> None:
    with grpc.insecure_channel(native.endpoint) as channel:
        echo, _, _ = _stubs(channel)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            echo(REQ(key=b"slow"), timeout=0.3)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 5
    assert native.probe.cancelled.wait(5)
    assert native.call(lambda: sum(len(c.calls) for c in native.server.connections)) == 0


def test_client_cancel_resets_the_stream_and_cancels_the_handler(native: Running) -> None:
    with grpc.insecure_channel(native.endpoint) as channel:
        echo, _, _ = _stubs(channel)
        future = echo.future(REQ(key=b"slow"), timeout=30)
        deadline = time.monotonic() + 5
        while native.streams() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        future.cancel()
        assert native.probe.cancelled.wait(5)
        assert echo(REQ(key=b"after"), timeout=5).kvs[0].key == b"after"


def test_message_over_the_limit_is_resource_exhausted(native: Running) -> None:
    with grpc.insecure_channel(native.endpoint) as channel:
        echo, _, _ = _stubs(channel)
        limit = MAX_REQUEST_BYTES + 512 * 1024
        with pytest.raises(grpc.RpcError) as info:
            echo(REQ(key=b"x" * (limit + 10)), timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # just under the limit passes
        big = b"y" * (limit - 16)
        assert echo(REQ(key=big), timeout=10).count == len(big)


def test_server_stream_and_error_after_messages(native: Running) -> None:
    with grpc.insecure_channel(native.endpoint) as channel:
        _, stream, _ = _stubs(channel)
        replies = list(stream(REQ(key=b"v", limit=100), timeout=10))
        assert [r.count for r in replies] == list(range(100))
        call = stream(REQ(key=b"fail", limit=3), timeout=10)
        got = []
        with pytest.raises(grpc.RpcError) as info:
            for reply in call:
                got.append(reply.count)
        assert got == [0, 1, 2]
        assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert info.value.details() == "etcdserver: mvcc: required revision has been compacted"


def test_bidi_echo_and_error_status(native: Running) -> None:
    with grpc.insecure_channel(native.endpoint) as channel:
        _, _, chat = _stubs(channel)
        keys = [b"a%d" % i for i in range(200)]
        replies = list(chat(iter([REQ(key=k) for k in keys]), timeout=10))
        assert [r.kvs[0].key for r in replies] == keys
        with pytest.raises(grpc.RpcError) as info:
            list(chat(iter([REQ(key=b"x"), REQ(key=b"end")]), timeout=10))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_stream_nobody_reads_blocks_only_itself(native: Running) -> None:
    """A flood of 200 × 64 KiB responses on a stream whose window the client never reopens: the
    handler waits on flow control, while another stream of the same connection is answered."""
    client = h2raw.RawClient(native.port, window=1000)
    try:
        # the connection window is wide open; only stream windows stay at 1000 bytes
        client.send(h2raw.frame(h2raw.WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 30)))
        flood = REQ(key=b"flood", limit=200).SerializeToString()
        client.send(
            h2raw.frame(
                h2raw.HEADERS, h2raw.END_HEADERS, 1, h2raw.grpc_headers(f"/{SERVICE}/Stream")
            )
            + h2raw.frame(h2raw.DATA, h2raw.END_STREAM, 1, h2raw.grpc_message(flood))
        )
        client.read_until(lambda fs: any(f.kind == h2raw.DATA and f.sid == 1 for f in fs))
        ask = REQ(key=b"other").SerializeToString()
        client.send(
            h2raw.frame(h2raw.HEADERS, h2raw.END_HEADERS, 3, h2raw.grpc_headers(f"/{SERVICE}/Echo"))
            + h2raw.frame(h2raw.DATA, h2raw.END_STREAM, 3, h2raw.grpc_message(ask))
        )
        frames = client.read_until(lambda fs: h2raw.stream_ended(fs, 3))
        data = b"".join(f.payload for f in h2raw.on_stream(frames, 3) if f.kind == h2raw.DATA)
        assert rpc_pb2.RangeResponse.FromString(data[5:]).kvs[0].key == b"other"
        flooded = sum(len(f.payload) for f in h2raw.on_stream(frames, 1) if f.kind == h2raw.DATA)
        assert flooded <= 1000  # never past the stream's window
        sent = native.call(lambda: native.probe.flood_sent)
        assert 0 < sent < 20  # the handler waits: at most ~256 KiB queued for the stream
        assert not h2raw.stream_ended(frames, 1)
        # and a held-back stream costs no CPU: the server thread idles (no flush spinning)
        tid = native.call(threading.get_native_id)
        before = _thread_cpu_s(tid)
        time.sleep(0.5)  # a measurement window, not synchronisation
        assert _thread_cpu_s(tid) - before < 0.1
    finally:
        client.close()


def _thread_cpu_s(tid: int) -> float:
    with open(f"/proc/self/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
