"""petcd.transport: raft messages, snapshots and small RPCs between cluster members.

asyncio on the server's event loop (uvloop works), plain TCP or TLS, no grpcio: each frame is a
4-byte length plus one encoded `transportpb.Frame` (proto/petcd/pb/transport.proto; the byte
layout is in frame.py). Imports only petcd.pb, petcd.errors (and petcd.raft for types).

    t = Transport(member_id, cluster_id,
                  on_message=server.step,                  # (Message) -> None
                  on_snapshot=server.snapshot_received,    # (Message, path) -> None
                  report_unreachable=node.report_unreachable,   # (member_id) -> None
                  report_snapshot=node.report_snapshot,    # (member_id, ok) -> None
                  snapshot_path_for=lambda index: ...,     # where a received backend goes
                  tls=TransportTLS(...) | None, rng=random.Random(seed),
                  limits=TransportLimits(...))             # every bound, with defaults
    await t.start(["http://127.0.0.1:2380"])   # binds; returns the bound URLs (port 0 = any)
    t.add_peer(2, ["http://10.0.0.2:2380"]); t.update_peer(2, [...]); t.remove_peer(2)
    t.send(rd.messages)                        # never blocks, never raises
    t.send_snapshot(msg_snap, db_path)         # streams the file; then report_snapshot(2, ok)
    t.register("members", handler)             # handler: async (bytes) -> bytes
    await t.call(2, "members", b"", timeout_s=1.0)          # by member id
    await t.call("http://10.0.0.2:2380", "members", b"")    # by URL (joining: ids unknown)
    t.set_identity(member_id, cluster_id)      # a joining member, once it knows them
    t.active_since(2) -> float | None; t.reachable_peers() -> [ids]; t.stats[2] -> PeerStats
    t.last_error(2) -> str                     # why connecting failed (e.g. cluster id)
    t.queued_bytes(2) -> int                   # held for the peer: queue + socket buffer
    t.faults.partition({2, 3}); t.faults.heal(); t.faults.drop_rate = 0.1  (see faults.py)
    await t.stop()                             # re-raises a bug found in a transport task

Guarantees:
- per peer, messages arrive in the order they were sent, or not at all (raft retries);
- `send()` drops (and reports the peer unreachable, once per loop iteration) when the peer is
  disconnected, its queue is full, or a message is larger than a frame; everything sent to a
  peer within one loop iteration goes out as one frame;
- a snapshot travels on its own connection in chunks carrying a running CRC-32 of the file;
  the receiver checks it, fsyncs and renames the file to `snapshot_path_for(index)` before
  `on_snapshot(message, path)`; heartbeats keep flowing on the message connection meanwhile;
- a peer of another cluster (or another member at the expected URL) is refused in the
  handshake, logged as an error on both sides; `call()` raises PeerClusterIdMismatchError;
- reconnects back off from 50 ms doubling to 1 s, jittered by the injected rng; every
  connection attempt times out (`connect_timeout_s`);
- every queue, frame, buffer and concurrent stream is bounded (`TransportLimits`).

Wiring notes for the server: call `start()` before `send()`; every callback runs on the event
loop, outside `send()` (reports come in a later loop iteration), so the server may step raft
in them; a message given to `on_message` shares memory with the frame it arrived in, so raft
keeping its entries keeps that frame's buffer alive (bounded by `frame_bytes_max`).
"""

from petcd.transport.faults import Direction, Faults
from petcd.transport.records import PeerStats, TransportLimits
from petcd.transport.tls import TransportTLS
from petcd.transport.transport import Transport
from petcd.transport.urls import PeerURL, parse_url

__all__ = [
    "Direction",
    "Faults",
    "PeerStats",
    "PeerURL",
    "Transport",
    "TransportLimits",
    "TransportTLS",
    "parse_url",
]
