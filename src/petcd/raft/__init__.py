"""petcd.raft: raft consensus as a pure state machine (no I/O, no clock, no threads).

The server drives a `RawNode` (see rawnode.py for the driving loop and the persistence
rules); `MemoryStorage` holds the persisted log it reads. The simulator in `petcd.raft.sim`
drives several nodes through a faulty in-memory network from one seed.
"""

from petcd.pb.raft_pb2 import (
    ConfChange,
    ConfChangeSingle,
    ConfChangeV2,
    ConfState,
    Entry,
    HardState,
    Message,
    Snapshot,
    SnapshotMetadata,
)
from petcd.raft.raft import CAMPAIGN_TRANSFER, Config, SoftState, StateType
from petcd.raft.rawnode import Peer, ProgressStatus, RawNode, Ready, Status
from petcd.raft.read_only import ReadOnlyOption, ReadState
from petcd.raft.storage import NO_LIMIT, MemoryStorage, Storage
from petcd.raft.tracker import ProgressState

__all__ = [
    "CAMPAIGN_TRANSFER",
    "NO_LIMIT",
    "Config",
    "ConfChange",
    "ConfChangeSingle",
    "ConfChangeV2",
    "ConfState",
    "Entry",
    "HardState",
    "MemoryStorage",
    "Message",
    "Peer",
    "ProgressState",
    "ProgressStatus",
    "RawNode",
    "ReadOnlyOption",
    "ReadState",
    "Ready",
    "Snapshot",
    "SnapshotMetadata",
    "SoftState",
    "StateType",
    "Status",
    "Storage",
]
