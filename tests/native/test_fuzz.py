"""Random and mutated byte streams straight into the extension: no crash, no leak.

Anything may happen to a connection fed garbage except a crash, an exception other than
`ProtocolError`, or state that outgrows its bounds. Requests that do come out are answered
(unary, streamed and failed) so the response side runs on the same mangled sessions.
"""

from __future__ import annotations

import random
import resource
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from petcd.pb import rpc_pb2
from tests.native import h2raw
from tests.native.h2raw import DATA, END_HEADERS, END_STREAM, HEADERS, frame

_h2 = pytest.importorskip("petcd.api.native._h2")

METHODS = {b"/t.S/Unary": 0 * 4 + 0, b"/t.S/Stream": 1 * 4 + 1, b"/t.S/Bidi": 2 * 4 + 2}
MAX_STREAMS = 64


def conversation(rng: random.Random) -> bytes:
    """A plausible client session: preface, settings, a few calls of every kind, resets."""
    out = [h2raw.PREFACE, h2raw.settings(initial_window_size=rng.choice([0, 100, 65535]))]
    message = h2raw.grpc_message(
        rpc_pb2.RangeRequest(key=b"k" * rng.randint(0, 40)).SerializeToString()
    )
    for sid in range(1, rng.randint(2, 12) * 2, 2):
        path = rng.choice([*METHODS, b"/t.S/Nope"]).decode()
        out.append(
            frame(HEADERS, END_HEADERS, sid, h2raw.grpc_headers(path, [("grpc-timeout", "5S")]))
        )
        for _ in range(rng.randint(0, 3)):
            out.append(frame(DATA, 0, sid, message))
        roll = rng.random()
        if roll < 0.6:
            out.append(frame(DATA, END_STREAM, sid, b""))
        elif roll < 0.8:
            out.append(frame(h2raw.RST_STREAM, 0, sid, struct.pack(">I", 8)))
        out.append(frame(h2raw.WINDOW_UPDATE, 0, 0, struct.pack(">I", rng.randint(1, 1 << 20))))
        if rng.random() < 0.2:
            out.append(frame(h2raw.PING, 0, 0, b"12345678"))
    if rng.random() < 0.2:
        out.append(frame(h2raw.GOAWAY, 0, 0, struct.pack(">II", 0, 0)))
    return b"".join(out)


def mutate(data: bytes, rng: random.Random, edits: int) -> bytes:
    buf = bytearray(data)
    for _ in range(edits):
        if not buf:
            break
        op = rng.randrange(4)
        i = rng.randrange(len(buf))
        if op == 0:
            buf[i] = rng.randrange(256)
        elif op == 1:
            del buf[i : i + rng.randint(1, 16)]
        elif op == 2:
            buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        else:
            j = rng.randrange(len(buf))
            buf[i:i] = buf[j : j + rng.randint(1, 64)]
    return bytes(buf)


def run_session(data: bytes, chunk_sizes: list[int]) -> None:
    conn = _h2.Connection(METHODS, 4096, MAX_STREAMS)
    pos = 0
    sizes = chunk_sizes or [len(data) or 1]
    step = 0
    while pos < len(data):
        size = max(1, sizes[step % len(sizes)])
        step += 1
        try:
            events = conn.feed(data[pos : pos + size])
        except _h2.ProtocolError:
            conn.drain()
            break
        pos += size
        answer(conn, events)
        out, writable = conn.drain()
        assert isinstance(out, bytes)
        assert all(isinstance(s, int) for s in writable)
        assert conn.active_streams() <= MAX_STREAMS + 1
        if conn.want_close():
            break
    conn.goaway()
    conn.drain()
    assert conn.active_streams() <= MAX_STREAMS + 1


def answer(conn: object, events: list[tuple[int, int, int, object, float, object]]) -> None:
    for kind, sid, index, payload, timeout_s, metadata in events:
        assert kind in (0, 1, 2, 3, 4)
        assert sid > 0 and sid % 2 == 1
        assert timeout_s >= 0.0
        assert metadata is None or isinstance(metadata, list)
        if kind == 0:
            assert isinstance(payload, bytes) and index in (0, 1)
            if index == 0:
                conn.respond(sid, payload)  # type: ignore[attr-defined]
            else:
                conn.send_message(sid, payload * 3)  # type: ignore[attr-defined]
                conn.finish(sid, 11, "done ✓")  # type: ignore[attr-defined]
        elif kind == 2:
            assert isinstance(payload, bytes)
            conn.consume(sid, len(payload) + 5)  # type: ignore[attr-defined]
            conn.send_message(sid, payload)  # type: ignore[attr-defined]
        elif kind == 3:
            conn.finish(sid, 0)  # type: ignore[attr-defined]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    edits=st.integers(0, 8),
    chunk_sizes=st.lists(st.integers(1, 300), max_size=6),
)
def test_mutated_sessions_never_crash(seed: int, edits: int, chunk_sizes: list[int]) -> None:
    rng = random.Random(seed)
    run_session(mutate(conversation(rng), rng, edits), chunk_sizes)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=600), chunk_sizes=st.lists(st.integers(1, 64), max_size=4))
def test_random_bytes_after_a_valid_preface_never_crash(
    data: bytes, chunk_sizes: list[int]
) -> None:
    run_session(h2raw.PREFACE + data, chunk_sizes)
    run_session(data, chunk_sizes)


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


def test_no_leak_over_thousands_of_mangled_sessions() -> None:
    """The same 1,500 sessions three times: the third pass may not grow memory."""
    corpus = []
    rng = random.Random(1234)
    for _ in range(1500):
        corpus.append(mutate(conversation(rng), rng, rng.randint(0, 4)))
    rss = []
    for _ in range(3):
        for data in corpus:
            run_session(data, [rng.randint(1, 500)])
        rss.append(_rss_kib())
    assert rss[2] - rss[1] < 2048, rss


def test_the_unmutated_corpus_reaches_every_event_kind() -> None:
    """Guards the fuzz tests against testing only the preface check."""
    kinds: set[int] = set()
    for seed in range(100):
        conn = _h2.Connection(METHODS, 4096, MAX_STREAMS)
        kinds.update(event[0] for event in conn.feed(conversation(random.Random(seed))))
    assert kinds == {0, 1, 2, 3, 4}


def test_a_ping_flood_ends_the_session_and_late_answers_are_harmless() -> None:
    conn = _h2.Connection(METHODS, 4096, MAX_STREAMS)
    message = h2raw.grpc_message(rpc_pb2.RangeRequest(key=b"k").SerializeToString())
    events = conn.feed(
        h2raw.PREFACE
        + h2raw.settings()
        + frame(HEADERS, END_HEADERS, 1, h2raw.grpc_headers("/t.S/Unary"))
        + frame(DATA, END_STREAM, 1, message)
    )
    assert [e[0] for e in events] == [0]
    flood = frame(h2raw.PING, 0, 0, b"12345678") * 2000  # acknowledgements never drained
    with pytest.raises(_h2.ProtocolError):
        conn.feed(flood)  # nghttp2: more than 1000 queued ACKs is a flood
    assert conn.want_close()
    conn.respond(1, b"late")  # the handler finishing afterwards must not raise
    conn.finish(1, 0)
    conn.drain()
