"""The deterministic raft cluster simulator: `python -m petcd.raft.sim --seeds N | --seed n`."""

from petcd.raft.sim.checker import Checker, Violation
from petcd.raft.sim.cluster import Simulation, run_seed

__all__ = ["Checker", "Simulation", "Violation", "run_seed"]
