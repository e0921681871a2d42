"""Safety checks of the raft simulator, run after every simulation step.

- election safety: at most one leader per term (Raft §5.2);
- log matching: two entries with the same index and term carry the same data, and logs that
  agree on an entry agree on every entry before it (§5.3);
- leader completeness: a leader's log holds every entry committed (applied anywhere) before
  it became leader (§5.4);
- state machine safety: no two members apply different entries (or reach different state
  hashes) at one index (§5.4.3);
- monotonic commit: a member's commit index never falls within one incarnation, and its
  persisted commit index never falls across restarts;
- persistence: committed entries handed out for applying are already on the member's disk;
- linearizable reads: a read index covers every write applied anywhere before the read began.

A failed check raises `Violation` with a message naming the rule; the simulator turns it into
the failing seed and the command that replays it.
"""

from __future__ import annotations

from petcd.pb.raft_pb2 import Entry
from petcd.raft.log import RaftLog

_MAX_LOG_COMPARE = 100_000  # bound on the entries compared per pair of logs


class Violation(Exception):
    """A raft safety property does not hold."""


class Checker:
    __slots__ = ("applied_entries", "applied_hashes", "entries_seen", "leaders", "max_applied")

    def __init__(self) -> None:
        self.leaders: dict[int, int] = {}
        self.entries_seen: dict[tuple[int, int], bytes] = {}
        self.applied_entries: dict[int, tuple[int, bytes]] = {}
        self.applied_hashes: dict[int, bytes] = {}
        self.max_applied = 0

    def leader(self, term: int, id_: int) -> None:
        other = self.leaders.setdefault(term, id_)
        if other != id_:
            raise Violation(f"election safety: term {term} has leaders {other} and {id_}")

    def appended(self, id_: int, ents: list[Entry]) -> None:
        seen = self.entries_seen
        for e in ents:
            key = (e.index, e.term)
            data = seen.setdefault(key, e.data)
            if data != e.data:
                raise Violation(
                    f"log matching: member {id_} has entry {e.term}/{e.index} with other data"
                )

    def applied(self, id_: int, index: int, term: int, data: bytes, state_hash: bytes) -> None:
        prev = self.applied_entries.setdefault(index, (term, data))
        if prev != (term, data):
            raise Violation(
                f"state machine safety: member {id_} applied {term}/{index} {data!r}, "
                f"another applied {prev[0]}/{index} {prev[1]!r}"
            )
        self.state_at(id_, index, state_hash)

    def state_at(self, id_: int, index: int, state_hash: bytes) -> None:
        prev = self.applied_hashes.setdefault(index, state_hash)
        if prev != state_hash:
            raise Violation(f"state machine safety: member {id_} state at {index} differs")
        self.max_applied = max(self.max_applied, index)

    def leader_complete(self, id_: int, term: int, log: RaftLog) -> None:
        """Every entry applied anywhere is in the new leader's log (or its snapshot)."""
        first = log.first_index()
        last = log.last_index()
        for index, (eterm, _) in self.applied_entries.items():
            if eterm >= term:
                continue
            if index > last:
                raise Violation(
                    f"leader completeness: leader {id_} of term {term} lacks committed entry "
                    f"{eterm}/{index} (last index {last})"
                )
            if index >= first and log.term_or_zero(index) != eterm:
                raise Violation(
                    f"leader completeness: leader {id_} of term {term} has "
                    f"{log.term_or_zero(index)}/{index}, committed was {eterm}/{index}"
                )

    def read_index(self, id_: int, index: int, applied_before: int) -> None:
        if index < applied_before:
            raise Violation(
                f"linearizable read: member {id_} got read index {index} but {applied_before} "
                "was applied before the read began"
            )


def compare_logs(a_id: int, a: RaftLog, b_id: int, b: RaftLog) -> None:
    """Log matching between two members: agreeing on an entry means agreeing on all before it."""
    lo = max(a.first_index(), b.first_index())
    hi = min(a.last_index(), b.last_index())
    if hi < lo:
        return
    hi = min(hi, lo + _MAX_LOG_COMPARE)
    ea = a.slice(lo, hi + 1, 1 << 62)
    eb = b.slice(lo, hi + 1, 1 << 62)
    assert len(ea) == len(eb) == hi - lo + 1
    # Find the last index where both have the same term; everything before must be equal.
    k = len(ea) - 1
    while k >= 0 and ea[k].term != eb[k].term:
        k -= 1
    for j in range(k, -1, -1):
        x = ea[j]
        y = eb[j]
        if x.term != y.term or x.data != y.data or x.type != y.type:
            raise Violation(
                f"log matching: members {a_id} and {b_id} agree at {ea[k].term}/{ea[k].index} "
                f"but differ at {x.index} ({x.term} vs {y.term})"
            )
