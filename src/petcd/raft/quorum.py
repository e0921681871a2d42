"""Quorum arithmetic: the committed index and the outcome of a vote, for majority and joint configs.

A majority config of n voters needs n // 2 + 1 of them. A joint config (incoming, outgoing)
needs a majority of each half (raft thesis §4.3); an empty outgoing half agrees to anything,
so a non-joint config is the joint config (voters, ()).

Invariants: the committed index of a config is acknowledged by a quorum of it (and no larger
index is); an empty config commits everything (INDEX_MAX) and wins every vote, which is what
makes the joint min() and the empty outgoing half neutral.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Mapping

INDEX_MAX = (1 << 64) - 1


class VoteResult(enum.IntEnum):
    PENDING = 1
    LOST = 2
    WON = 3


def majority_committed(voters: Collection[int], match: Callable[[int], int]) -> int:
    """The largest index that a majority of `voters` has acknowledged (match(id) per voter)."""
    n = len(voters)
    if n == 0:
        return INDEX_MAX
    acked = sorted([match(v) for v in voters], reverse=True)
    # The quorum-th largest index is held by at least n // 2 + 1 voters.
    index = acked[n // 2]
    assert index >= acked[-1]
    return index


def joint_committed(
    incoming: Collection[int], outgoing: Collection[int], match: Callable[[int], int]
) -> int:
    a = majority_committed(incoming, match)
    b = majority_committed(outgoing, match)
    return min(a, b)


def majority_vote_result(voters: Collection[int], votes: Mapping[int, bool]) -> VoteResult:
    """WON once a majority granted, LOST once a majority can no longer grant, else PENDING."""
    n = len(voters)
    if n == 0:
        return VoteResult.WON
    granted = 0
    missing = 0
    for v in voters:
        vote = votes.get(v)
        if vote is None:
            missing += 1
        elif vote:
            granted += 1
    quorum = n // 2 + 1
    if granted >= quorum:
        return VoteResult.WON
    if granted + missing >= quorum:
        return VoteResult.PENDING
    return VoteResult.LOST


def joint_vote_result(
    incoming: Collection[int], outgoing: Collection[int], votes: Mapping[int, bool]
) -> VoteResult:
    r1 = majority_vote_result(incoming, votes)
    r2 = majority_vote_result(outgoing, votes)
    if r1 == r2:
        return r1
    if VoteResult.LOST in (r1, r2):
        return VoteResult.LOST
    # One half won and the other is still pending.
    return VoteResult.PENDING
