"""`python -m petcd.raft.sim --seeds N` runs seeds 1..N; `--seed n [-v]` replays one seed.

The last line is `simulated N seeds: K violations`; each failing seed is printed with the
command that replays it, and the exit status is non-zero when any seed failed.
"""

from __future__ import annotations

import argparse
import sys
import time

from petcd.raft.sim.checker import Violation
from petcd.raft.sim.cluster import run_seed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m petcd.raft.sim")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--seeds", type=int, help="run seeds 1..N")
    group.add_argument("--seed", type=int, help="replay one seed")
    parser.add_argument("--first", type=int, default=1, help="first seed of --seeds (default 1)")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="trace events (-vv: and messages)"
    )
    args = parser.parse_args(argv)
    if args.seed is not None:
        seeds = [args.seed]
    else:
        seeds = list(range(args.first, args.first + args.seeds))
    trace = print if args.verbose else None
    failures = 0
    started = time.monotonic()
    for seed in seeds:
        try:
            sim = run_seed(seed, trace, args.verbose > 1)
        except Violation as exc:
            failures += 1
            print(f"FAILED {exc}", flush=True)
            print(
                f"  replay: make simulate SEED={seed}   (or: python -m petcd.raft.sim --seed {seed} -v)"
            )
            continue
        if args.seed is not None or args.verbose:
            print(f"seed {seed}: size {sim.size}, {sim.faults}, stats {sim.stats}")
    elapsed = time.monotonic() - started
    print(f"({elapsed:.1f} s)", file=sys.stderr)
    print(f"simulated {len(seeds)} seeds: {failures} violations")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
