"""MVCC store on LMDB: revisions, key index, KV with txn and compaction, watchers.

    from petcd.mvcc import Backend, WatchableStore, LeaseHooks, validate
    backend = Backend(path, quota_bytes=2 * 1024**3)
    store = WatchableStore(backend, lease_hooks=None)

See kvstore.py (reads, compaction, hashes), write_batch.py (writes), watchable.py (watchers)
and backend.py (LMDB, copies, defragmentation, restore).
"""

from petcd.mvcc import snapshot, validate
from petcd.mvcc.backend import DB_NAMES, Backend, CopyInfo
from petcd.mvcc.kvstore import Compaction, KVStore, LeaseHooks
from petcd.mvcc.watchable import WatchableStore, WatchBatch, WatchStream
from petcd.mvcc.write_batch import WriteBatch

__all__ = [
    "DB_NAMES",
    "Backend",
    "Compaction",
    "CopyInfo",
    "KVStore",
    "LeaseHooks",
    "WatchBatch",
    "WatchStream",
    "WatchableStore",
    "WriteBatch",
    "snapshot",
    "validate",
]
