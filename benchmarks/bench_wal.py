"""WAL save throughput: one save = one write + one fdatasync, by batch size (entries of 256 B).

Figures: wal.saves_per_s and wal.entries_per_s at batch 100; the same with a `.batchN` suffix
for batches of 1, 10 and 1000; wal.save_cpu_us_per_entry (the CPU part of a batch-1000 save,
measured with fdatasync switched off); wal.replay_entries_per_s (reopen and read back a log).

Disk speed on a shared machine drifts, so each run alternates blocks of WAL saves with blocks of
bare pwrite + fdatasync calls of the same size into a preallocated file (the floor: the most any
WAL could do from Python on this disk); every save figure carries `floor_saves_per_s` from the
same moments. PETCD_BENCH_DIR picks the directory (default: a temporary one).
"""

from __future__ import annotations

import os
import tempfile
import time

from benchmarks.common import record
from petcd.pb import raft_pb2
from petcd.wal import WAL, Disk

ENTRY_BYTES = 256
SEGMENT_BYTES = 64 * 1024 * 1024
BATCHES = [1, 10, 100, 1000]
SECONDS_PER_BATCH_SIZE = 3.0
BLOCK_SAVES = 20
SAVES_MAX = 4000


class _NoSyncDisk(Disk):
    def fdatasync(self, fd: int) -> None:
        pass


def _batch(first: int, size: int, data: bytes) -> list[raft_pb2.Entry]:
    return [raft_pb2.Entry(term=1, index=first + k, data=data) for k in range(size)]


def _run(dirpath: str, batch: int) -> tuple[float, float]:
    """(WAL saves/s, floor saves/s), alternating blocks of each for a fixed time."""
    data = os.urandom(ENTRY_BYTES)
    wal = WAL.create(os.path.join(dirpath, f"wal-{batch}"), b"bench", SEGMENT_BYTES)
    floor_path = os.path.join(dirpath, f"floor-{batch}")
    fd = os.open(floor_path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.posix_fallocate(fd, 0, SEGMENT_BYTES)
    state = raft_pb2.HardState(term=1, vote=1)
    save_bytes = sum(len(e.SerializeToString()) + 3 for e in _batch(1, batch, data)) + 48
    blob = os.urandom(save_bytes)
    wal_seconds = floor_seconds = 0.0
    saves = 0
    deadline = time.monotonic() + SECONDS_PER_BATCH_SIZE
    while time.monotonic() < deadline and saves < SAVES_MAX:  # bounded by time and count
        blocks = [_batch(1 + (saves + k) * batch, batch, data) for k in range(BLOCK_SAVES)]
        started = time.perf_counter()
        for entries in blocks:
            state.commit = entries[0].index
            wal.save(state, entries)
        wal_seconds += time.perf_counter() - started
        started = time.perf_counter()
        for k in range(BLOCK_SAVES):
            os.pwrite(fd, blob, ((saves + k) * save_bytes) % (SEGMENT_BYTES - save_bytes))
            os.fdatasync(fd)
        floor_seconds += time.perf_counter() - started
        saves += BLOCK_SAVES
    wal.close()
    os.close(fd)
    os.remove(floor_path)
    return saves / wal_seconds, saves / floor_seconds


def _cpu_us_per_entry(dirpath: str) -> float:
    """CPU of a batch-1000 save (encode, frame, CRC, write to the page cache), no fdatasync."""
    data = os.urandom(ENTRY_BYTES)
    wal = WAL.create(os.path.join(dirpath, "wal-cpu"), b"bench", SEGMENT_BYTES, disk=_NoSyncDisk())
    batches = [_batch(1 + n * 1000, 1000, data) for n in range(100)]
    started = time.perf_counter()
    for entries in batches:
        wal.save(None, entries)
    elapsed = time.perf_counter() - started
    wal.close()
    return elapsed / (100 * 1000) * 1e6


def _replay(dirpath: str) -> float:
    started = time.perf_counter()
    with WAL.open(os.path.join(dirpath, "wal-cpu"), segment_size_bytes=SEGMENT_BYTES) as wal:
        _, _, entries = wal.read_all()
    return len(entries) / (time.perf_counter() - started)


def main() -> None:
    base = os.environ.get("PETCD_BENCH_DIR")
    with tempfile.TemporaryDirectory(dir=base, prefix="petcd-bench-wal-") as dirpath:
        print(f"WAL save + fdatasync, entries of {ENTRY_BYTES} B, in {dirpath}")
        for batch in BATCHES:
            saves_per_s, floor = _run(dirpath, batch)
            suffix = "" if batch == 100 else f".batch{batch}"
            print(
                f"  batch {batch:>4}: {saves_per_s:9,.0f} saves/s {saves_per_s * batch:11,.0f} "
                f"entries/s ({saves_per_s / floor:.0%} of a bare write+fdatasync: {floor:,.0f}/s)"
            )
            extra = {"floor_saves_per_s": floor, "batch": batch}
            record(f"wal.saves_per_s{suffix}", saves_per_s, "saves/s", **extra)
            record(f"wal.entries_per_s{suffix}", saves_per_s * batch, "entries/s", **extra)
        record("wal.save_cpu_us_per_entry", _cpu_us_per_entry(dirpath), "us/entry")
        record("wal.replay_entries_per_s", _replay(dirpath), "entries/s")


if __name__ == "__main__":
    main()
