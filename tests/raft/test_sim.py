"""The deterministic simulator: at least 200 seeds in `make test`, plus regression seeds."""

from __future__ import annotations

import pytest

from petcd.raft.sim import Violation, run_seed
from petcd.raft.sim.__main__ import main as sim_main

SEEDS = 200
CHUNK = 20

# Seeds that found bugs, kept as regression tests (the fix is named next to each).
REGRESSION_SEEDS = {
    3: "a member added after the leader's last snapshot rejected that snapshot",
    118: "a candidate with a stale log kept resetting the others' election timers",
    439: "a new single voter answered ReadIndex before committing in its term",
    475: "a single member crashed before its first write and never bootstrapped again",
    583: "liveness check ignored members that caught up by snapshot",
    585: "a removed leader treated 'one voter' as 'I am the only voter' for ReadIndex",
    644: "a removed leader stepped down before the voters knew the removal committed",
    837: "a demoted leader stepped down while the remaining voter still needed its vote",
}


@pytest.mark.parametrize("first", range(1, SEEDS + 1, CHUNK))
def test_seeds(first: int) -> None:
    failures = []
    for seed in range(first, first + CHUNK):
        try:
            run_seed(seed)
        except Violation as exc:
            failures.append(f"{exc}\n  replay: make simulate SEED={seed}")
    assert failures == []


@pytest.mark.parametrize("seed", sorted(REGRESSION_SEEDS))
def test_regression_seed(seed: int) -> None:
    run_seed(seed)


def test_same_seed_same_run() -> None:
    a = run_seed(42)
    b = run_seed(42)
    assert a.stats == b.stats
    assert a.now == b.now
    assert a.checker.applied_hashes == b.checker.applied_hashes
    assert a.checker.leaders == b.checker.leaders


def test_simulate_command_reports_the_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim_main(["--seeds", "3"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "simulated 3 seeds: 0 violations"


def test_checker_catches_two_leaders_in_a_term() -> None:
    from petcd.raft.sim import Checker

    checker = Checker()
    checker.leader(5, 1)
    with pytest.raises(Violation, match="election safety"):
        checker.leader(5, 2)
    checker.applied(1, 3, 2, b"x", b"h")
    with pytest.raises(Violation, match="state machine safety"):
        checker.applied(2, 3, 2, b"y", b"h")


def test_failing_seed_prints_the_replay_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import petcd.raft.sim.__main__ as cli

    def broken(seed: int, *args: object) -> None:
        if seed == 2:
            raise Violation("seed 2 at tick 1.0: election safety: term 3 has leaders 1 and 2")

    monkeypatch.setattr(cli, "run_seed", broken)
    assert cli.main(["--seeds", "3"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert "make simulate SEED=2" in "\n".join(out)
    assert out[-1] == "simulated 3 seeds: 1 violations"
