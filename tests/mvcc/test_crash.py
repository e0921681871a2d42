"""Crash tests: a child process applying backend batches (with the consistent index) is
SIGKILLed at random points, 25 times. After each kill the store reopens; every batch whose
commit returned is there, the data is exactly the state after the batch named by the stored
consistent index (atomic batches), compaction resumes, and nothing is corrupt."""

from __future__ import annotations

import os
import pathlib
import random
import signal
import subprocess
import sys

from petcd.mvcc import Backend, WatchableStore
from petcd.mvcc.kvstore import key_of
from petcd.pb import kv_pb2
from petcd.pb import rpc_pb2 as rpc
from tests.mvcc.crash_child import expected_after

ROOT = pathlib.Path(__file__).resolve().parents[2]
KILLS = int(os.environ.get("PETCD_MVCC_CRASH_KILLS", "25"))


def verify(path: str, acked: int) -> int:
    backend = Backend(path, quota_bytes=256 * 1024**2)
    try:
        store = WatchableStore(backend)
        index = store.consistent_index
        assert index >= acked, f"batch {acked} was acknowledged but the store is at {index}"
        exp = expected_after(index)
        resp = store.range(rpc.RangeRequest(key=b"\x00", range_end=b"\x00"))
        assert {kv.key: kv.value for kv in resp.kvs} == exp.state
        assert store.current_revision == exp.rev
        assert store.compact_revision == exp.compact
        for raw_rev, raw in backend.items_raw("key"):  # every stored value decodes
            kv = kv_pb2.KeyValue.FromString(raw)
            assert kv.key == key_of(raw)
            assert len(raw_rev) in (17, 18)
        store.hash_kv(0)
        while store.compaction_step(max_keys=1000):
            pass
        return index
    finally:
        backend.close()


def test_sigkill_at_random_points_keeps_batches_atomic(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "db")
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    seed_note = f"seed {rng.random()}"
    last = 0
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + str(ROOT))
    for kill in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.mvcc.crash_child", path],
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        assert child.stdout is not None
        acked = last
        target = last + rng.randint(1, 25)
        while acked < target:
            line = child.stdout.readline()
            assert line, f"child died early ({seed_note}, kill {kill})"
            acked = int(line)
        # let it run on for a random few more batches (read, not slept) before the kill
        for _ in range(rng.randint(0, 3)):
            line = child.stdout.readline()
            acked = int(line) if line else acked
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
        last = verify(path, acked)
    assert last >= KILLS
