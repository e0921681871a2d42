"""Hand-built HTTP/2 frames (struct only) for adversarial tests of the native front end.

HPACK here is the smallest correct encoder: literal fields without indexing, no Huffman. The
server's header blocks are not decoded (that would need a Huffman decoder); tests read frame
types, flags, stream ids, error codes and DATA payloads, which is what protocol errors show.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
PROTOCOL_ERROR, FRAME_SIZE_ERROR, COMPRESSION_ERROR = 0x1, 0x6, 0x9
SETTINGS_INITIAL_WINDOW_SIZE = 0x4


def frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    assert len(payload) < 1 << 24
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", sid)
        + payload
    )


def settings(**values: int) -> bytes:
    ids = {"initial_window_size": 0x4, "max_frame_size": 0x5, "header_table_size": 0x1}
    body = b"".join(struct.pack(">HI", ids[k], v) for k, v in values.items())
    return frame(SETTINGS, 0, 0, body)


def _int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack(headers: list[tuple[str, str]]) -> bytes:
    out = bytearray()
    for name, value in headers:
        n, v = name.encode(), value.encode()
        out += b"\x00" + _int(len(n), 7) + n + _int(len(v), 7) + v
    return bytes(out)


def grpc_headers(path: str, extra: list[tuple[str, str]] | None = None) -> bytes:
    return hpack(
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *(extra or []),
        ]
    )


def grpc_message(payload: bytes, *, length: int | None = None, flag: int = 0) -> bytes:
    return bytes([flag]) + struct.pack(">I", len(payload) if length is None else length) + payload


@dataclass(slots=True)
class Frame:
    kind: int
    flags: int
    sid: int
    payload: bytes

    @property
    def error_code(self) -> int:
        if self.kind == GOAWAY:
            return int(struct.unpack(">I", self.payload[4:8])[0])
        assert self.kind == RST_STREAM
        return int(struct.unpack(">I", self.payload[:4])[0])


def parse_frames(data: bytes) -> tuple[list[Frame], bytes]:
    """Whole frames in `data` and the rest."""
    frames = []
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        if len(data) < 9 + length:
            break
        sid = int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
        frames.append(Frame(data[3], data[4], sid, data[9 : 9 + length]))
        data = data[9 + length :]
    return frames, data


class RawClient:
    """A blocking socket speaking hand-built HTTP/2; every read is bounded in time."""

    def __init__(self, port: int, *, handshake: bool = True, window: int | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buffer = b""
        self.frames: list[Frame] = []
        self.closed = False
        if handshake:
            initial = {} if window is None else {"initial_window_size": window}
            self.send(PREFACE + settings(**initial))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_until(self, predicate: object, timeout: float = 5.0) -> list[Frame]:
        """Read frames until `predicate(frames)` holds or the peer closes; all frames so far."""
        assert callable(predicate)
        deadline = time.monotonic() + timeout
        while not predicate(self.frames) and not self.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching frame; got {self.frames}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                self.closed = True
                break
            frames, self.buffer = parse_frames(self.buffer + chunk)
            for f in frames:
                if f.kind == SETTINGS and not f.flags & ACK:
                    self.send(frame(SETTINGS, ACK, 0))
                if f.kind == PING and not f.flags & ACK:
                    self.send(frame(PING, ACK, 0, f.payload))
            self.frames.extend(frames)
        return self.frames

    def wait_closed(self, timeout: float = 5.0) -> None:
        self.read_until(lambda frames: self.closed, timeout)

    def close(self) -> None:
        self.sock.close()


def goaway(frames: list[Frame]) -> Frame | None:
    return next((f for f in frames if f.kind == GOAWAY), None)


def on_stream(frames: list[Frame], sid: int) -> list[Frame]:
    return [f for f in frames if f.sid == sid]


def stream_ended(frames: list[Frame], sid: int) -> bool:
    return any(
        (f.kind in (DATA, HEADERS) and f.flags & END_STREAM) or f.kind == RST_STREAM
        for f in on_stream(frames, sid)
    )
