"""Child process for the crash tests: applies deterministic batches forever, printing each
batch number after its commit returned. The parent SIGKILLs it at random points.

Batch i (one LMDB write transaction): ten puts, a delete every third batch, a compaction
every tenth, and the consistent index i. `expected_after(n)` replays batches 1..n in plain
Python to give the exact state the store must hold when its consistent index is n.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

KEYS = 40


def batch_ops(i: int) -> list[tuple[str, bytes, bytes]]:
    ops = [("put", b"k%02d" % ((i * 7 + j) % KEYS), b"%d.%d" % (i, j)) for j in range(10)]
    if i % 3 == 0:
        ops.append(("del", b"k%02d" % ((i * 5) % KEYS), b""))
    return ops


@dataclass
class Expected:
    state: dict[bytes, bytes] = field(default_factory=dict)
    rev: int = 1
    compact: int = -1


def apply_batch(exp: Expected, i: int) -> int | None:
    """Advance `exp` by batch i; returns the compaction revision the batch schedules."""
    for op, key, value in batch_ops(i):
        if op == "put":
            exp.state[key] = value
            exp.rev += 1
        elif key in exp.state:
            del exp.state[key]
            exp.rev += 1
    if i % 10 == 0 and exp.rev - 20 > exp.compact:
        exp.compact = exp.rev - 20
        return exp.compact
    return None


def expected_after(n: int) -> Expected:
    exp = Expected()
    for i in range(1, n + 1):
        apply_batch(exp, i)
    return exp


def main() -> None:
    from petcd.mvcc import Backend, WatchableStore
    from petcd.pb import rpc_pb2 as rpc

    backend = Backend(sys.argv[1], quota_bytes=256 * 1024**2)
    store = WatchableStore(backend)
    i = store.consistent_index
    exp = expected_after(i)
    while True:
        i += 1
        b = store.write_batch()
        for op, key, value in batch_ops(i):
            if op == "put":
                b.put(rpc.PutRequest(key=key, value=value))
            else:
                b.delete_range(rpc.DeleteRangeRequest(key=key))
        compact = apply_batch(exp, i)
        if compact is not None:
            b.compact(compact)
        b.set_consistent_index(i, 1)
        b.commit()
        sys.stdout.write(f"{i}\n")
        sys.stdout.flush()
        store.compaction_step(max_keys=7)


if __name__ == "__main__":
    main()
