"""The peer transport between two processes on loopback: raft messages/s and snapshot MB/s.

Two members, as in a cluster: this process is the sender (member 1), a child process the
receiver (member 2), each on its own event loop (uvloop when installed, as the server).

- transport.msgs_per_s: MSG_APP messages carrying one 64-byte entry (a small put), sent in
  batches of 100 per loop iteration (pre-built: raft builds them in a server, so building them
  is not the transport's cost; each send() still encodes every message). The receiver acknowledges with one MSG_APP_RESP per loop
  iteration (index = messages received so far) and the sender keeps at most 20,000 messages
  unacknowledged, as raft's inflight window would. Counted over a fixed time after a warm-up.
  Also recorded: CPU microseconds per message in the sender and in the receiver.
- transport.snapshot_mb_per_s: a 128 MiB file streamed with send_snapshot until
  report_snapshot(ok) (that includes the receiver's fsync and rename), median of 3.

    .venv/bin/python -m benchmarks.run_all transport
"""

from __future__ import annotations

import asyncio
import functools
import os
import pathlib
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

from benchmarks.common import record
from petcd.pb.raft_pb2 import (
    MSG_APP,
    MSG_APP_RESP,
    MSG_SNAP,
    ConfState,
    Entry,
    Message,
    Snapshot,
    SnapshotMetadata,
)
from petcd.transport import Transport

CLUSTER = 0xBE7C
SENDER, RECEIVER = 1, 2
BATCH = 100
WINDOW = 20_000
WARMUP_S = 1.0
MEASURE_S = 5.0
SNAPSHOT_BYTES = 128 * 1024 * 1024
SNAPSHOT_ROUNDS = 3
PAYLOAD = b"k" * 16 + b"v" * 48
MIB = 1024 * 1024


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


# --- the receiver (child process) --------------------------------------------------------------


async def _receiver(sender_url: str, snap_dir: str) -> None:
    received = 0
    acked = 0
    scheduled = False
    loop = asyncio.get_running_loop()

    def ack() -> None:
        nonlocal scheduled, acked
        scheduled = False
        acked = received
        transport.send([Message(type=MSG_APP_RESP, to=SENDER, from_=RECEIVER, index=received)])

    def on_message(m: Message) -> None:
        nonlocal received, scheduled
        received += 1
        if not scheduled:
            scheduled = True
            loop.call_soon(ack)

    def on_snapshot(m: Message, path: str) -> None:
        os.unlink(path)

    transport = Transport(
        RECEIVER,
        CLUSTER,
        on_message=on_message,
        on_snapshot=on_snapshot,
        snapshot_path_for=lambda index: os.path.join(snap_dir, f"{index}.db"),
        rng=random.Random(RECEIVER),
    )
    urls = await transport.start(["http://127.0.0.1:0"])
    transport.add_peer(SENDER, [sender_url])
    print(urls[0], flush=True)
    cpu_started = time.process_time()
    # until the parent closes our stdin
    await loop.run_in_executor(None, sys.stdin.read)
    cpu = time.process_time() - cpu_started
    print(f"{received} {cpu}", flush=True)
    await transport.stop()


def receiver_main(sender_url: str, snap_dir: str) -> None:
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        runner.run(_receiver(sender_url, snap_dir))


# --- the sender (this process) -----------------------------------------------------------------


class Sender:
    def __init__(self) -> None:
        self.acked = 0
        self.reports: list[bool] = []
        self.wake = asyncio.Event()
        self.transport = Transport(
            SENDER,
            CLUSTER,
            on_message=self._on_message,
            report_snapshot=self._on_report,
            rng=random.Random(SENDER),
        )

    def _on_message(self, m: Message) -> None:
        self.acked = max(self.acked, m.index)
        self.wake.set()

    def _on_report(self, member_id: int, ok: bool) -> None:
        self.reports.append(ok)
        self.wake.set()

    async def wait(self, condition: Callable[[], bool], timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            while not condition():
                self.wake.clear()
                await self.wake.wait()


def _below_window(sender: Sender, sent: int) -> bool:
    return sent - sender.acked < WINDOW


def _batch(first_index: int) -> list[Message]:
    return [
        Message(
            type=MSG_APP,
            to=RECEIVER,
            from_=SENDER,
            term=2,
            index=first_index + i - 1,
            log_term=2,
            commit=first_index,
            entries=[Entry(term=2, index=first_index + i, data=PAYLOAD)],
        )
        for i in range(BATCH)
    ]


async def _messages(sender: Sender) -> tuple[float, float, int]:
    """(messages/s, sender CPU µs per message, messages counted)."""
    loop = asyncio.get_running_loop()
    sent = 0
    counted_from = counted_at = cpu_at = 0.0
    # Messages are built once and sent again and again: in a server raft builds them, so their
    # construction is not the transport's cost. The receiver only counts them.
    batches = [_batch(1 + i * BATCH) for i in range(16)]
    deadline = loop.time() + WARMUP_S + MEASURE_S
    measuring = False
    while loop.time() < deadline:  # bounded by the deadline
        if not measuring and loop.time() >= deadline - MEASURE_S:
            measuring = True
            counted_from, counted_at, cpu_at = sender.acked, loop.time(), time.process_time()
        if sent - sender.acked >= WINDOW:
            await sender.wait(functools.partial(_below_window, sender, sent), timeout_s=10)
            continue
        sender.transport.send(batches[(sent // BATCH) % len(batches)])
        sent += BATCH
        await asyncio.sleep(0)
    elapsed = loop.time() - counted_at
    count = int(sender.acked - counted_from)
    cpu = time.process_time() - cpu_at
    await sender.wait(lambda: sender.acked >= sent, timeout_s=30)
    assert sender.transport.stats[RECEIVER].send_failures == 0, "the window should prevent drops"
    return count / elapsed, cpu / max(count, 1) * 1e6, count


def _snapshot_message(index: int) -> Message:
    meta = SnapshotMetadata(index=index, term=2, conf_state=ConfState(voters=[1, 2]))
    return Message(
        type=MSG_SNAP, to=RECEIVER, from_=SENDER, term=2, snapshot=Snapshot(metadata=meta)
    )


async def _snapshots(sender: Sender, db_path: str) -> list[float]:
    rates = []
    for round_ in range(SNAPSHOT_ROUNDS):
        sender.reports.clear()
        started = time.monotonic()
        sender.transport.send_snapshot(_snapshot_message(100 + round_), db_path)
        await sender.wait(lambda: bool(sender.reports), timeout_s=120)
        elapsed = time.monotonic() - started
        assert sender.reports == [True], "snapshot transfer failed"
        rates.append(SNAPSHOT_BYTES / MIB / elapsed)
    return rates


async def _run(workdir: pathlib.Path) -> None:
    sender = Sender()
    sender_url = (await sender.transport.start(["http://127.0.0.1:0"]))[0]
    snap_dir = workdir / "received"
    snap_dir.mkdir()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.bench_transport",
        "--receiver",
        sender_url,
        str(snap_dir),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=pathlib.Path(__file__).resolve().parents[1],
    )
    assert child.stdout is not None and child.stdin is not None
    try:
        receiver_url = (await asyncio.wait_for(child.stdout.readline(), 30)).decode().strip()
        sender.transport.add_peer(RECEIVER, [receiver_url])
        async with asyncio.timeout(10):
            while sender.transport.active_since(RECEIVER) is None:
                await asyncio.sleep(0.01)
        rate, sender_us, count = await _messages(sender)
        db_path = workdir / "backend.db"
        block = os.urandom(MIB)
        with db_path.open("wb") as f:
            for _ in range(SNAPSHOT_BYTES // MIB):
                f.write(block)
        snapshot_rates = await _snapshots(sender, str(db_path))
    finally:
        child.stdin.close()
        tail = (await asyncio.wait_for(child.stdout.read(), 30)).decode().split()
        await child.wait()
        await sender.transport.stop()
    received, receiver_cpu = int(tail[0]), float(tail[1])
    loop_name = type(asyncio.get_running_loop()).__module__.split(".")[0]
    print(f"event loop: {loop_name}; {count:,} messages counted over {MEASURE_S:g} s")
    print(f"receiver: {received:,} messages in total, {receiver_cpu:.2f} s CPU")
    record("transport.msgs_per_s", rate, "msg/s", sender_cpu_us_per_msg=round(sender_us, 2))
    median = statistics.median(snapshot_rates)
    print("snapshot rounds: " + ", ".join(f"{r:,.0f} MB/s" for r in snapshot_rates))
    record("transport.snapshot_mb_per_s", median, "MB/s", snapshot_bytes=SNAPSHOT_BYTES)


def main() -> None:
    with (
        tempfile.TemporaryDirectory(prefix="bench-transport-") as workdir,
        asyncio.Runner(loop_factory=_new_loop) as runner,
    ):
        runner.run(_run(pathlib.Path(workdir)))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--receiver":
        receiver_main(sys.argv[2], sys.argv[3])
    else:
        main()
