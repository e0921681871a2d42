"""petcd.wal: raft's write-ahead log and raft snapshot files.

    WAL           segments of checksummed records: entries, hard state, snapshot markers
    WalSnapshot   a snapshot marker (index, term, conf_state)
    Snapshotter   "%016x-%016x.snap" files holding raft snapshots
    DirLock       one process per directory
    Disk          the file operations the WAL and Snapshotter use (swap it to inject faults)
    wal_dir, snap_dir   <data-dir>/member/wal and <data-dir>/member/snap, as etcd lays them out

Imports only petcd.pb and petcd.errors.
"""

from petcd.wal.disk import Disk
from petcd.wal.layout import snap_dir, wal_dir
from petcd.wal.lock import DirLock
from petcd.wal.replay import WalSnapshot
from petcd.wal.snap import Snapshotter
from petcd.wal.wal import SEGMENT_SIZE_BYTES_DEFAULT, WAL

__all__ = [
    "SEGMENT_SIZE_BYTES_DEFAULT",
    "WAL",
    "DirLock",
    "Disk",
    "Snapshotter",
    "WalSnapshot",
    "snap_dir",
    "wal_dir",
]
