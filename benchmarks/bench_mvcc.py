"""MVCC store benchmarks (in-process, no gRPC): puts, point ranges, watch fan-out, open
time and memory with 1,000,000 keys. Rates are wall-clock; each record also carries the rate
by this process's CPU time (`cpu_per_s`) and the load average, as the machine may be shared.

Figures:
- mvcc.put_per_s: puts/s in write batches of 100, commit included, LMDB without fsync
  (the MVCC cost itself; the target is >= 100,000);
- mvcc.put_per_s_synced: the same with the default durable commit (metasync=False: one
  fdatasync per commit), and mvcc.put_per_s_synced_1000 with batches of 1000;
- mvcc.commit_ms_metasync / mvcc.commit_ms_fullsync / mvcc.commit_ms_nosync: time of one
  commit of a 100-put batch in each LMDB sync mode;
- mvcc.range_per_s: point ranges/s over 100,000 keys in random order through range() (a
  parsed RangeResponse; target >= 200,000), and mvcc.range_encoded_per_s through
  range_encoded() (the stored bytes spliced into an encoded response);
- watch.fanout_events_per_s: events delivered per second to 1,000 watchers of one key
  (100 streams), from commit to poll;
- mvcc.open_1m_keys_s / mvcc.rss_1m_keys_mb / mvcc.anon_rss_1m_keys_mb: a fresh process opens a
  backend holding 1,000,000 keys (index rebuild); resident memory after open, total and
  anonymous (Python heap, without the mapped file).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time

from benchmarks.common import record
from petcd.mvcc import Backend, WatchableStore
from petcd.pb import rpc_pb2 as rpc

VALUE = b"v" * 64
KEYSPACE = 100_000


def _key(i: int) -> bytes:
    return b"/registry/pods/%08d" % i


def _fresh(tmp: str, name: str, **kw: object) -> tuple[Backend, WatchableStore]:
    backend = Backend(os.path.join(tmp, name), quota_bytes=16 * 1024**3, **kw)  # type: ignore[arg-type]
    return backend, WatchableStore(backend)


def _puts(store: WatchableStore, total: int, batch: int, seed: int) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, wall seconds in commit) for `total` puts in batches."""
    rng = random.Random(seed)
    reqs = [rpc.PutRequest(key=_key(rng.randrange(KEYSPACE)), value=VALUE) for _ in range(total)]
    in_commit = 0.0
    started = time.perf_counter()
    cpu = time.process_time()
    for start in range(0, total, batch):
        b = store.write_batch()
        for req in reqs[start : start + batch]:
            b.put(req)
        before = time.perf_counter()
        b.commit()
        in_commit += time.perf_counter() - before
    return time.perf_counter() - started, time.process_time() - cpu, in_commit


def _load_note() -> dict[str, float]:
    """The machine's load average: figures are wall-clock, and this machine is shared."""
    return {"load_avg_1m": os.getloadavg()[0]}


def bench_puts(tmp: str) -> WatchableStore:
    _, store = _fresh(tmp, "nosync.db", unsafe_no_fsync=True)
    _puts(store, 100_000, 1000, 1)  # every key exists: puts update, as in steady state
    total = 200_000
    seconds, cpu, in_commit = _puts(store, total, 100, 2)
    record("mvcc.put_per_s", total / seconds, "puts/s", cpu_per_s=total / cpu, **_load_note())
    record("mvcc.commit_ms_nosync", in_commit / (total / 100) * 1e3, "ms")
    for name, batch, n in [
        ("mvcc.put_per_s_synced", 100, 20_000),
        ("mvcc.put_per_s_synced_1000", 1000, 50_000),
    ]:
        b2, s2 = _fresh(tmp, name + ".db")
        seconds, cpu, in_commit = _puts(s2, n, batch, 3)
        record(name, n / seconds, "puts/s", cpu_per_s=n / cpu, **_load_note())
        if batch == 100:
            record("mvcc.commit_ms_metasync", in_commit / (n / batch) * 1e3, "ms")
        b2.close()
    b3, s3 = _fresh(tmp, "fullsync.db", full_sync=True)
    seconds, cpu, in_commit = _puts(s3, 10_000, 100, 4)
    record("mvcc.commit_ms_fullsync", in_commit / 100 * 1e3, "ms")
    b3.close()
    return store


def bench_ranges(store: WatchableStore) -> None:
    rng = random.Random(5)
    reqs = [rpc.RangeRequest(key=_key(rng.randrange(KEYSPACE))) for _ in range(200_000)]
    for name, read in [
        ("mvcc.range_per_s", store.range),
        ("mvcc.range_encoded_per_s", store.range_encoded),
    ]:
        started = time.perf_counter()
        cpu = time.process_time()
        for req in reqs:
            read(req)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu
        record(name, len(reqs) / seconds, "ranges/s", cpu_per_s=len(reqs) / cpu, **_load_note())


def bench_fanout(tmp: str) -> None:
    backend, store = _fresh(tmp, "fanout.db", unsafe_no_fsync=True)
    streams = [store.new_watch_stream(lambda: None, 1000) for _ in range(100)]
    for i in range(1000):
        streams[i % 100].watch(b"/watched/key")
    puts = 2000
    delivered = 0
    started = time.perf_counter()
    for start in range(0, puts, 10):
        b = store.write_batch()
        for i in range(start, start + 10):
            b.put(rpc.PutRequest(key=b"/watched/key", value=b"%d" % i))
        b.commit()
        for s in streams:
            for batch in s.poll():
                delivered += len(batch.events)
    seconds = time.perf_counter() - started
    assert delivered == puts * 1000, delivered
    record("watch.fanout_events_per_s", delivered / seconds, "events/s")
    backend.close()


def _build_1m(path: str) -> None:
    backend = Backend(path, quota_bytes=16 * 1024**3, unsafe_no_fsync=True)
    store = WatchableStore(backend)
    for start in range(0, 1_000_000, 10_000):
        b = store.write_batch()
        for i in range(start, start + 10_000):
            b.put(rpc.PutRequest(key=_key(i), value=VALUE))
        b.commit()
    backend.sync()
    backend.close()


_OPEN_CHILD = """
import json, sys, time
def status(field):
    for line in open('/proc/self/status'):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
from petcd.mvcc import Backend, WatchableStore
before = status('RssAnon:')
started = time.perf_counter()
backend = Backend(sys.argv[1], quota_bytes=16 * 1024**3)
store = WatchableStore(backend)
seconds = time.perf_counter() - started
assert len(store.index) == 1_000_000
print(json.dumps({'seconds': seconds, 'rss': status('VmRSS:'), 'anon': status('RssAnon:'),
                  'anon_before': before}))
"""


def bench_open(tmp: str) -> None:
    path = os.path.join(tmp, "million.db")
    started = time.perf_counter()
    _build_1m(path)
    print(f"  (built 1,000,000 keys in {time.perf_counter() - started:.1f} s)")
    out = subprocess.run(
        [sys.executable, "-c", _OPEN_CHILD, path], capture_output=True, check=True, text=True
    )
    figures = json.loads(out.stdout)
    record("mvcc.open_1m_keys_s", figures["seconds"], "s")
    record("mvcc.rss_1m_keys_mb", figures["rss"], "MiB")
    record("mvcc.anon_rss_1m_keys_mb", figures["anon"], "MiB", anon_before=figures["anon_before"])


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="petcd-bench-mvcc-") as tmp:
        store = bench_puts(tmp)
        bench_ranges(store)
        store.backend.close()
        bench_fanout(tmp)
        bench_open(tmp)


if __name__ == "__main__":
    main()
