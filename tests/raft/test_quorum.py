"""Quorum arithmetic against a naive twin (hypothesis), and vote tables."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from petcd.raft.quorum import (
    INDEX_MAX,
    VoteResult,
    joint_committed,
    joint_vote_result,
    majority_committed,
    majority_vote_result,
)


def naive_committed(voters: set[int], match: dict[int, int]) -> int:
    """The largest index i such that a majority of voters has match >= i (by trying them all)."""
    if not voters:
        return INDEX_MAX
    best = 0
    for candidate in {match.get(v, 0) for v in voters}:
        if sum(1 for v in voters if match.get(v, 0) >= candidate) > len(voters) // 2:
            best = max(best, candidate)
    return best


def naive_vote(voters: set[int], votes: dict[int, bool]) -> VoteResult:
    if not voters:
        return VoteResult.WON
    yes = sum(1 for v in voters if votes.get(v) is True)
    no = sum(1 for v in voters if votes.get(v) is False)
    need = len(voters) // 2 + 1
    if yes >= need:
        return VoteResult.WON
    if len(voters) - no >= need:
        return VoteResult.PENDING
    return VoteResult.LOST


ids = st.sets(st.integers(1, 9), max_size=7)
matches = st.dictionaries(st.integers(1, 9), st.integers(0, 20))


@settings(max_examples=500)
@given(ids, ids, matches)
def test_committed_index_matches_naive_twin(
    a: set[int], b: set[int], match: dict[int, int]
) -> None:
    got = majority_committed(a, lambda i: match.get(i, 0))
    assert got == naive_committed(a, match)
    joint = joint_committed(a, b, lambda i: match.get(i, 0))
    assert joint == min(naive_committed(a, match), naive_committed(b, match))


@settings(max_examples=500)
@given(ids, ids, st.dictionaries(st.integers(1, 9), st.booleans()))
def test_vote_result_matches_naive_twin(a: set[int], b: set[int], votes: dict[int, bool]) -> None:
    assert majority_vote_result(a, votes) == naive_vote(a, votes)
    r1, r2 = naive_vote(a, votes), naive_vote(b, votes)
    if VoteResult.LOST in (r1, r2):
        expected = VoteResult.LOST
    elif r1 == r2 == VoteResult.WON:
        expected = VoteResult.WON
    else:
        expected = VoteResult.PENDING
    assert joint_vote_result(a, b, votes) == expected


@pytest.mark.parametrize(
    ("voters", "votes", "expected"),
    [
        ({1}, {1: True}, VoteResult.WON),
        ({1, 2, 3}, {1: True}, VoteResult.PENDING),
        ({1, 2, 3}, {1: True, 2: True}, VoteResult.WON),
        ({1, 2, 3}, {1: True, 2: False, 3: False}, VoteResult.LOST),
        ({1, 2, 3, 4}, {1: True, 2: True, 3: False}, VoteResult.PENDING),
        ({1, 2, 3, 4}, {1: True, 2: False, 3: False}, VoteResult.LOST),
        (set(), {}, VoteResult.WON),
    ],
)
def test_vote_table(voters: set[int], votes: dict[int, bool], expected: VoteResult) -> None:
    assert majority_vote_result(voters, votes) == expected
