"""The transport's limits (every queue, frame and wait is bounded by one of these) and its
per-peer counters (plain attributes the server can export as metrics)."""

from __future__ import annotations

from dataclasses import dataclass

from petcd.errors import TransportConfigError

MIB = 1024 * 1024


@dataclass(slots=True)
class TransportLimits:
    #: Largest frame sent or accepted; batches are cut below it, a bigger message is dropped.
    frame_bytes_max: int = 16 * MIB
    #: Messages waiting to be written to one peer (not yet in the socket buffer).
    queue_messages_max: int = 4096
    queue_bytes_max: int = 32 * MIB
    #: Above this many bytes in a connection's socket buffer we stop writing to it.
    write_buffer_high_bytes: int = 4 * MIB
    #: A connection whose socket buffer stays above the high-water mark this long is closed.
    write_stall_timeout_s: float = 10.0
    #: TCP connect + TLS + handshake, for one attempt.
    connect_timeout_s: float = 1.0
    #: An accepted connection must say Hello within this time.
    hello_timeout_s: float = 5.0
    #: Reconnect delays: initial, doubling up to max, each multiplied by a jitter in [0.5, 1).
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 1.0
    snapshot_chunk_bytes: int = 1 * MIB
    #: Cap on the bandwidth of one outgoing snapshot (0: none, as etcd).
    snapshot_send_bytes_per_s: int = 0
    snapshot_bytes_max: int = 64 * 1024 * MIB
    #: Snapshot streams received at once (more are refused as busy).
    snapshot_streams_max: int = 4
    #: Chunks received but not yet written to disk; reading pauses above this.
    snapshot_queue_bytes_max: int = 8 * MIB
    #: No progress (a chunk written or sent) for this long fails a snapshot transfer.
    snapshot_stall_timeout_s: float = 30.0
    #: After the last chunk: the receiver's fsync, verification and on_snapshot.
    snapshot_result_timeout_s: float = 120.0
    #: Calls in flight on one RPC connection, on each side.
    rpc_inflight_max: int = 128
    #: Cached outgoing RPC connections (one per URL and expected member).
    rpc_clients_max: int = 64
    inbound_connections_max: int = 512

    def validate(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if name == "snapshot_send_bytes_per_s" and value == 0:
                continue
            if not value > 0:
                raise TransportConfigError(f"limit {name} must be positive, not {value!r}")
        if self.snapshot_chunk_bytes + 64 > self.frame_bytes_max:
            raise TransportConfigError("snapshot_chunk_bytes must fit in frame_bytes_max")
        if self.backoff_initial_s > self.backoff_max_s:
            raise TransportConfigError("backoff_initial_s must not exceed backoff_max_s")
        if self.queue_bytes_max < self.frame_bytes_max:
            raise TransportConfigError("queue_bytes_max must hold at least one full frame")


@dataclass(slots=True)
class PeerStats:
    """Counters for one peer. `sent_*` count what was written to the connection."""

    sent_messages: int = 0
    sent_bytes: int = 0
    sent_frames: int = 0
    received_messages: int = 0
    received_bytes: int = 0
    received_frames: int = 0
    #: Messages dropped because the peer was disconnected, its queue full, or one was too big.
    send_failures: int = 0
    #: Messages dropped by fault injection (partition, drop rate), both directions.
    fault_drops: int = 0
    #: Outgoing message connections established / connection attempts that failed.
    connects: int = 0
    dial_failures: int = 0
    snapshots_sent: int = 0
    snapshot_send_failures: int = 0
    snapshot_bytes_sent: int = 0
    snapshots_received: int = 0
    snapshot_receive_failures: int = 0
    snapshot_bytes_received: int = 0
