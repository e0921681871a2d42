"""One tree of petcd's errors, each carrying the gRPC status code and etcd's exact message.

Expected failures (bad input, compacted revisions, a corrupt file, a full disk) raise one of
these; bugs raise AssertionError and stop the member. The API layer turns a PetcdError into a
gRPC status with `code` and `message` in one place; the client turns a status back into the
same class by its message (etcd's clients match on the message text, so it is byte-exact).

    PetcdError
    ├── RequestError                    (invalid requests; InvalidArgument unless noted)
    │   ├── EmptyKeyError, KeyNotFoundError, ValueProvidedError, LeaseProvidedError,
    │   │   TooManyOpsError, DuplicateKeyError, RequestTooLargeError
    │   ├── CompactedError, FutureRevisionError            (OutOfRange)
    │   ├── LeaseNotFoundError (NotFound), LeaseExistError, LeaseTTLTooLargeError (OutOfRange)
    │   ├── NoSpaceError (ResourceExhausted), CorruptError (DataLoss)
    │   ├── TooManyRequestsError (wire quirk: Unknown)
    │   ├── Member*Error, PeerURLExistError, LearnerNotReadyError, TooManyLearnersError, ...
    │   ├── Auth errors: UserEmptyError, AuthFailedError, PermissionDeniedError, ...
    │   ├── Downgrade errors
    │   ├── WatchDuplicateIdError, WatcherRangeEmptyError  (watch cancel reasons)
    │   ├── WatchCanceledError (Canceled), BadLeaderTransfereeError, NotLeaderError
    │   ├── ElectionNoLeaderError, ElectionNotLeaderError, LockSessionExpiredError (Unknown)
    │   └── SnapshotIntegrityError (DataLoss: a downloaded snapshot failed its SHA-256)
    ├── UnavailableError                (Unavailable: the request may be retried)
    │   ├── NoLeaderError, LeaderChangedError, NotCapableError, StoppedError,
    │   ├── TimeoutError_, TimeoutDueToLeaderFailError, TimeoutDueToConnectionLostError,
    │   ├── TimeoutWaitAppliedIndexError, UnhealthyError, NotSupportedForLearnerError,
    │   └── ClusterVersionUnavailableError
    ├── RaftError                       (raft core refusals, seen by the server)
    │   ├── ProposalDroppedError, RaftCompactedError, RaftUnavailableError,
    │   ├── SnapshotOutOfDateError, SnapshotTemporarilyUnavailableError, StepPeerNotFoundError
    │   └── RaftConfigError, ConfChangeError
    ├── TransportError                  (peer transport, petcd.transport; Unavailable unless noted)
    │   ├── PeerUnreachableError, PeerTimeoutError, PeerRemoteError (Unknown)
    │   ├── PeerHandshakeError (refused: wrong member, protocol version, busy)
    │   ├── FrameError (a malformed or oversized frame), SnapshotTransferError (DataLoss)
    │   └── TransportConfigError (InvalidArgument: bad peer URL, https without TLS files)
    │   (PeerClusterIdMismatchError is a ClusterIdMismatchError: FailedPrecondition)
    └── StorageError                    (data directory problems; the member refuses to start)
        ├── CorruptFileError (names the file and offset), DataDirLockedError
        ├── BackendFullError (the LMDB map is full: reported to clients as NOSPACE)
        ├── DiskFullError (ENOSPC, EDQUOT or EFBIG on a data file), StorageIOError (other I/O)
        └── WalNotFoundError, WalExistsError, WalSnapshotMismatchError, WalFailedError
"""

from __future__ import annotations

import enum
from typing import ClassVar


class GrpcCode(enum.IntEnum):
    """gRPC status codes (numbers as on the wire)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class PetcdError(Exception):
    """Base of every expected petcd failure. `code` and `message` are what a client sees."""

    code: ClassVar[GrpcCode] = GrpcCode.UNKNOWN
    default_message: ClassVar[str] = "petcd: error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message if message is not None else self.default_message
        super().__init__(self.message)


# --- invalid requests and refused operations -------------------------------------------------


class RequestError(PetcdError):
    code = GrpcCode.INVALID_ARGUMENT


class EmptyKeyError(RequestError):
    default_message = "etcdserver: key is not provided"


class KeyNotFoundError(RequestError):
    default_message = "etcdserver: key not found"


class ValueProvidedError(RequestError):
    default_message = "etcdserver: value is provided"


class LeaseProvidedError(RequestError):
    default_message = "etcdserver: lease is provided"


class TooManyOpsError(RequestError):
    default_message = "etcdserver: too many operations in txn request"


class DuplicateKeyError(RequestError):
    default_message = "etcdserver: duplicate key given in txn request"


class RequestTooLargeError(RequestError):
    default_message = "etcdserver: request is too large"


class CompactedError(RequestError):
    code = GrpcCode.OUT_OF_RANGE
    default_message = "etcdserver: mvcc: required revision has been compacted"


class FutureRevisionError(RequestError):
    code = GrpcCode.OUT_OF_RANGE
    default_message = "etcdserver: mvcc: required revision is a future revision"


class NoSpaceError(RequestError):
    code = GrpcCode.RESOURCE_EXHAUSTED
    default_message = "etcdserver: mvcc: database space exceeded"


class CorruptError(RequestError):
    code = GrpcCode.DATA_LOSS
    default_message = "etcdserver: corrupt cluster"


class TooManyRequestsError(RequestError):
    # etcd maps this to its client-side error value, so it reaches the wire as Unknown.
    code = GrpcCode.UNKNOWN
    default_message = "etcdserver: too many requests"


class LeaseNotFoundError(RequestError):
    code = GrpcCode.NOT_FOUND
    default_message = "etcdserver: requested lease not found"


class LeaseExistError(RequestError):
    code = GrpcCode.FAILED_PRECONDITION
    default_message = "etcdserver: lease already exists"


class LeaseTTLTooLargeError(RequestError):
    code = GrpcCode.OUT_OF_RANGE
    default_message = "etcdserver: too large lease TTL"


class WatchCanceledError(RequestError):
    code = GrpcCode.CANCELLED
    default_message = "etcdserver: watch canceled"


class MemberExistError(RequestError):
    code = GrpcCode.FAILED_PRECONDITION
    default_message = "etcdserver: member ID already exist"


class PeerURLExistError(RequestError):
    code = GrpcCode.FAILED_PRECONDITION
    default_message = "etcdserver: Peer URLs already exists"


class MemberNotEnoughStartedError(RequestError):
    # Wire quirk as TooManyRequestsError: arrives as Unknown.
    code = GrpcCode.UNKNOWN
    default_message = "etcdserver: re-configuration failed due to not enough started members"


class MemberBadURLsError(RequestError):
    default_message = "etcdserver: given member URLs are invalid"


class MemberNotFoundError(RequestError):
    code = GrpcCode.NOT_FOUND
    default_message = "etcdserver: member not found"


class MemberNotLearnerError(RequestError):
    code = GrpcCode.FAILED_PRECONDITION
    default_message = "etcdserver: can only promote a learner member"


class LearnerNotReadyError(RequestError):
    code = GrpcCode.FAILED_PRECONDITION
    default_message = "etcdserver: can only promote a learner member which is in sync with leader"


class TooManyLearnersError(RequestError):
    code = GrpcCode.FAILED_PRECONDITION
    default_message = "etcdserver: too many learner members in cluster"


class ClusterIdMismatchError(RequestError):
    code = GrpcCode.FAILED_PRECONDITION
    default_message = "etcdserver: cluster ID mismatch"


class RootUserNotExistError(RequestError):
    code = GrpcCode.FAILED_PRECONDITION
    default_message = "etcdserver: root user does not exist"


class RootRoleNotExistError(RequestError):
    code = GrpcCode.FAILED_PRECONDITION
    default_message = "etcdserver: root user does not have root role"


class UserAlreadyExistError(RequestError):
    code = GrpcCode.FAILED_PRECONDITION
    default_message = "etcdserver: user name already exists"


class UserEmptyError(RequestError):
    default_message = "etcdserver: user name is empty"


class UserNotFoundError(RequestError):
    code = GrpcCode.FAILED_PRECONDITION
    default_message = "etcdserver: user name not found"


class RoleAlreadyExistError(RequestError):
    code = GrpcCode.FAILED_PRECONDITION
    default_message = "etcdserver: role name already exists"


class RoleNotFoundError(RequestError):
    code = GrpcCode.FAILED_PRECONDITION
    default_message = "etcdserver: role name not found"


class RoleEmptyError(RequestError):
    default_message = "etcdserver: role name is empty"


class AuthFailedError(RequestError):
    default_message = "etcdserver: authentication failed, invalid user ID or password"


class PermissionNotGivenError(RequestError):
    default_message = "etcdserver: permission not given"


class PermissionDeniedError(RequestError):
    code = GrpcCode.PERMISSION_DENIED
    default_message = "etcdserver: permission denied"


class RoleNotGrantedError(RequestError):
    code = GrpcCode.FAILED_PRECONDITION
    default_message = "etcdserver: role is not granted to the user"


class PermissionNotGrantedError(RequestError):
    code = GrpcCode.FAILED_PRECONDITION
    default_message = "etcdserver: permission is not granted to the role"


class AuthNotEnabledError(RequestError):
    code = GrpcCode.FAILED_PRECONDITION
    default_message = "etcdserver: authentication is not enabled"


class InvalidAuthTokenError(RequestError):
    code = GrpcCode.UNAUTHENTICATED
    default_message = "etcdserver: invalid auth token"


class InvalidAuthMgmtError(RequestError):
    default_message = "etcdserver: invalid auth management"


class AuthOldRevisionError(RequestError):
    default_message = "etcdserver: revision of auth store is old"


class NotLeaderError(RequestError):
    code = GrpcCode.FAILED_PRECONDITION
    default_message = "etcdserver: not leader"


class BadLeaderTransfereeError(RequestError):
    code = GrpcCode.FAILED_PRECONDITION
    default_message = "etcdserver: bad leader transferee"


class WrongDowngradeVersionFormatError(RequestError):
    default_message = "etcdserver: wrong downgrade target version format"


class InvalidDowngradeTargetVersionError(RequestError):
    default_message = "etcdserver: invalid downgrade target version"


class DowngradeInProcessError(RequestError):
    code = GrpcCode.FAILED_PRECONDITION
    default_message = "etcdserver: cluster has a downgrade job in progress"


class NoInflightDowngradeError(RequestError):
    code = GrpcCode.FAILED_PRECONDITION
    default_message = "etcdserver: no inflight downgrade job"


class LeaderTransferTimeoutError(RequestError):
    code = GrpcCode.UNKNOWN
    default_message = "etcdserver: request timed out, leader transfer took too long"


class CanceledError(RequestError):
    code = GrpcCode.CANCELLED
    default_message = "context canceled"


class DeadlineExceededError(RequestError):
    code = GrpcCode.DEADLINE_EXCEEDED
    default_message = "context deadline exceeded"


class MessageTooLargeError(RequestError):
    """gRPC's own limit on a received message (max-request-bytes + 512 KiB)."""

    code = GrpcCode.RESOURCE_EXHAUSTED
    default_message = "grpc: received message larger than max"


class WatchDuplicateIdError(RequestError):
    """A client-chosen watch id already in use on the stream (sent as a watch cancel_reason)."""

    default_message = "mvcc: duplicate watch ID provided on the WatchStream"


class WatcherRangeEmptyError(RequestError):
    """Watch with key >= range_end (sent as a watch cancel_reason)."""

    default_message = "mvcc: watcher range is empty"


class UnimplementedError(RequestError):
    code = GrpcCode.UNIMPLEMENTED
    default_message = "unknown service"


# Errors of etcd's concurrency recipes (clientv3/concurrency). The Election and Lock services
# return them unmapped, so on the wire they arrive as code Unknown with exactly this text.


class ElectionNoLeaderError(RequestError):
    code = GrpcCode.UNKNOWN
    default_message = "election: no leader"


class ElectionNotLeaderError(RequestError):
    code = GrpcCode.UNKNOWN
    default_message = "election: not leader"


class LockSessionExpiredError(RequestError):
    """The lease behind a lock or an election candidacy expired before it was acquired."""

    code = GrpcCode.UNKNOWN
    default_message = "mutex: session is expired"


class SnapshotIntegrityError(RequestError):
    """A snapshot stream's SHA-256 trailer does not match the bytes received (client side)."""

    code = GrpcCode.DATA_LOSS
    default_message = "petcd: snapshot SHA-256 trailer does not match its data"


# --- temporary unavailability ------------------------------------------------------------------


class UnavailableError(PetcdError):
    code = GrpcCode.UNAVAILABLE
    default_message = "etcdserver: unavailable"


class NoLeaderError(UnavailableError):
    default_message = "etcdserver: no leader"


class LeaderChangedError(UnavailableError):
    default_message = "etcdserver: leader changed"


class NotCapableError(UnavailableError):
    default_message = "etcdserver: not capable"


class StoppedError(UnavailableError):
    default_message = "etcdserver: server stopped"


class RequestTimeoutError(UnavailableError):
    default_message = "etcdserver: request timed out"


class TimeoutDueToLeaderFailError(UnavailableError):
    default_message = "etcdserver: request timed out, possibly due to previous leader failure"


class TimeoutDueToConnectionLostError(UnavailableError):
    default_message = "etcdserver: request timed out, possibly due to connection lost"


class TimeoutWaitAppliedIndexError(UnavailableError):
    default_message = "etcdserver: request timed out, waiting for the applied index took too long"


class UnhealthyError(UnavailableError):
    default_message = "etcdserver: unhealthy cluster"


class NotSupportedForLearnerError(UnavailableError):
    default_message = "etcdserver: rpc not supported for learner"


class ClusterVersionUnavailableError(UnavailableError):
    default_message = "etcdserver: cluster version not found during downgrade"


# --- raft core refusals ------------------------------------------------------------------------


class RaftError(PetcdError):
    code = GrpcCode.UNKNOWN


class ProposalDroppedError(RaftError):
    """A proposal was refused: no leader, a leadership transfer, or too many uncommitted bytes."""

    default_message = "raft proposal dropped"


class RaftCompactedError(RaftError):
    default_message = "requested index is unavailable due to compaction"


class RaftUnavailableError(RaftError):
    default_message = "requested entry at index is unavailable"


class SnapshotOutOfDateError(RaftError):
    default_message = "requested index is older than the existing snapshot"


class SnapshotTemporarilyUnavailableError(RaftError):
    default_message = "snapshot is temporarily unavailable"


class StepPeerNotFoundError(RaftError):
    default_message = "raft: cannot step as peer not found"


class RaftConfigError(RaftError):
    """A raft Config is invalid: the caller's mistake, caught when the node is built."""

    default_message = "raft: invalid config"


class ConfChangeError(RaftError):
    """A configuration change cannot be applied to the current configuration."""

    default_message = "raft: invalid configuration change"


# --- peer transport ----------------------------------------------------------------------------


class TransportError(PetcdError):
    """The peer transport could not do what was asked; `target` names the peer (id or URL)."""

    code = GrpcCode.UNAVAILABLE
    default_message = "petcd: peer transport error"


class PeerUnreachableError(TransportError):
    """No connection to the peer: refused, reset, partitioned (fault injection) or unknown."""

    def __init__(self, target: str, reason: str) -> None:
        self.target = target
        self.reason = reason
        super().__init__(f"petcd: peer {target} is unreachable: {reason}")


class PeerTimeoutError(TransportError):
    """A peer call got no answer within its timeout."""

    code = GrpcCode.DEADLINE_EXCEEDED

    def __init__(self, target: str, method: str, timeout_s: float) -> None:
        self.target = target
        self.method = method
        self.timeout_s = timeout_s
        super().__init__(f"petcd: peer {target} did not answer {method!r} within {timeout_s:g} s")


class PeerRemoteError(TransportError):
    """The peer's handler for a call failed with something other than a petcd error."""

    code = GrpcCode.UNKNOWN

    def __init__(self, target: str, method: str, reason: str) -> None:
        self.target = target
        self.method = method
        self.reason = reason
        super().__init__(f"petcd: peer {target} failed {method!r}: {reason}")


class PeerHandshakeError(TransportError):
    """The peer refused the connection (or we refused its answer) for a reason other than
    the cluster id: another member at that URL, another protocol version, too busy."""

    def __init__(self, target: str, reason: str) -> None:
        self.target = target
        self.reason = reason
        super().__init__(f"petcd: handshake with peer {target} failed: {reason}")


class PeerClusterIdMismatchError(ClusterIdMismatchError):
    """The peer belongs to another cluster; both sides log it and close the connection."""

    def __init__(self, target: str, local_cluster_id: int, remote_cluster_id: int) -> None:
        self.target = target
        self.local_cluster_id = local_cluster_id
        self.remote_cluster_id = remote_cluster_id
        super().__init__(
            f"{ClusterIdMismatchError.default_message}: peer {target} is in cluster "
            f"{remote_cluster_id:x}, this member is in cluster {local_cluster_id:x}"
        )


class FrameError(TransportError):
    """A frame on a peer connection is malformed or larger than allowed: the connection closes."""

    code = GrpcCode.INTERNAL

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"petcd: bad peer frame: {reason}")


class SnapshotTransferError(TransportError):
    """A streamed snapshot failed: its CRC-32, its size, a stall, or an I/O error."""

    code = GrpcCode.DATA_LOSS

    def __init__(self, target: str, reason: str) -> None:
        self.target = target
        self.reason = reason
        super().__init__(f"petcd: snapshot transfer with peer {target} failed: {reason}")


class TransportConfigError(TransportError):
    """The transport was configured wrongly (a bad peer URL, https without TLS settings)."""

    code = GrpcCode.INVALID_ARGUMENT

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"petcd: transport configuration: {reason}")


# --- data directory / storage ------------------------------------------------------------------


class StorageError(PetcdError):
    code = GrpcCode.INTERNAL
    default_message = "petcd: storage error"


class CorruptFileError(StorageError):
    """A file on disk failed verification; the member refuses to start rather than serve it."""

    code = GrpcCode.DATA_LOSS

    def __init__(self, path: str, offset: int, reason: str) -> None:
        self.path = path
        self.offset = offset
        self.reason = reason
        super().__init__(f"petcd: corrupt file {path} at offset {offset}: {reason}")


class DataDirLockedError(StorageError):
    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"petcd: data directory {path} is in use by another process")


class BackendFullError(StorageError):
    """The backend reached its size limit; clients see NOSPACE."""

    code = GrpcCode.RESOURCE_EXHAUSTED
    default_message = NoSpaceError.default_message


class DiskFullError(StorageError):
    """A write, preallocation or sync of a data file found no space (ENOSPC, EDQUOT, EFBIG)."""

    code = GrpcCode.RESOURCE_EXHAUSTED

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"petcd: no space for {path}: {reason}")


class StorageIOError(StorageError):
    """Any other I/O failure on a data file (EIO, EROFS, ...)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"petcd: I/O error on {path}: {reason}")


class WalNotFoundError(StorageError):
    """WAL.open found no segment files in the directory."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"petcd: no write-ahead log in {path}")


class WalExistsError(StorageError):
    """WAL.create found segment files already in the directory."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"petcd: a write-ahead log already exists in {path}")


class WalSnapshotMismatchError(StorageError):
    """The snapshot given to WAL.open has no marker in the log, or entries after it are gone."""

    def __init__(self, path: str, index: int, term: int, reason: str) -> None:
        self.path = path
        self.index = index
        self.term = term
        self.reason = reason
        super().__init__(f"petcd: WAL {path} does not match snapshot {term}/{index}: {reason}")


class WalFailedError(StorageError):
    """An earlier write or sync of this WAL failed; it takes no more records until reopened."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"petcd: WAL {path} stopped after an earlier failure: {reason}")


def _leaf_classes(base: type[PetcdError]) -> list[type[PetcdError]]:
    found: list[type[PetcdError]] = []
    for sub in base.__subclasses__():
        found.append(sub)
        found.extend(_leaf_classes(sub))
    return found


_BY_MESSAGE: dict[str, type[PetcdError]] = {}
for _cls in _leaf_classes(PetcdError):
    if _cls.__init__ is PetcdError.__init__ and _cls.default_message not in _BY_MESSAGE:
        _BY_MESSAGE[_cls.default_message] = _cls


def from_status(code: int, message: str) -> PetcdError:
    """The PetcdError a client should raise for a gRPC status (matched by message, as etcd)."""
    cls = _BY_MESSAGE.get(message)
    if cls is not None:
        return cls(message)
    error = PetcdError(message)
    error.code = GrpcCode(code) if code in GrpcCode._value2member_map_ else GrpcCode.UNKNOWN  # type: ignore[misc]
    return error
