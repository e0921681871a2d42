"""Text scenarios in tests/raft/testdata: commands, `----`, the expected trace.

Each block is a command line, a `----` line, and the expected output (up to a blank line).
`pytest tests/raft --rewrite` rewrites the files with the actual output; review the diff.

Commands:
    add-nodes N [pre_vote=true] [check_quorum=true] [max_inflight_msgs=K]
    campaign ID | propose ID DATA | propose-conf-change ID (vN|lN|rN)
    tick-heartbeat ID [N] | tick-election ID | isolate ID | cut A B | recover
    stabilize [ID...] | deliver-msgs ID | process-ready ID
    read-index ID CTX | transfer-leader FROM TO | compact ID | restart ID
    status ID | raft-log ID
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import pytest

from petcd.errors import PetcdError
from petcd.pb.raft_pb2 import (
    CONF_CHANGE_ADD_LEARNER_NODE,
    CONF_CHANGE_ADD_NODE,
    CONF_CHANGE_REMOVE_NODE,
    ConfChange,
)
from petcd.raft import StateType
from petcd.raft.util import describe_entry

from .harness import STATE_NAMES, Cluster

TESTDATA = pathlib.Path(__file__).parent / "testdata"


def parse(text: str) -> list[tuple[str, list[str]]]:
    """[(command, expected lines)] from a scenario file (# comments between blocks)."""
    blocks: list[tuple[str, list[str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            i += 1
            continue
        cmd = line
        assert lines[i + 1] == "----", f"line {i + 2}: expected ----"
        i += 2
        out = []
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        blocks.append((cmd, out))
    return blocks


class Scenario:
    def __init__(self) -> None:
        self.c: Cluster | None = None

    @property
    def cluster(self) -> Cluster:
        assert self.c is not None, "add-nodes first"
        return self.c

    def run(self, cmd: str) -> list[str]:
        name, *args = cmd.split()
        handler: Callable[[list[str]], list[str]] = getattr(self, "cmd_" + name.replace("-", "_"))
        try:
            return handler(args)
        except PetcdError as exc:
            return [f"error: {type(exc).__name__}: {exc.message}"]

    def cmd_add_nodes(self, args: list[str]) -> list[str]:
        opts: dict[str, object] = {}
        for kv in args[1:]:
            k, v = kv.split("=")
            opts[k] = v == "true" if v in ("true", "false") else int(v)
        self.c = Cluster(range(1, int(args[0]) + 1), **opts)
        self.c.trace = True
        self.c.out.clear()
        return ["ok"]

    def _traced(self, fn: Callable[[], object]) -> list[str]:
        c = self.cluster
        c.out.clear()
        fn()
        return list(c.out) or ["ok"]

    def cmd_campaign(self, args: list[str]) -> list[str]:
        return self._traced(lambda: self.cluster.node(int(args[0])).campaign())

    def cmd_propose(self, args: list[str]) -> list[str]:
        return self._traced(lambda: self.cluster.node(int(args[0])).propose(args[1].encode()))

    def cmd_propose_conf_change(self, args: list[str]) -> list[str]:
        kinds = {
            "v": CONF_CHANGE_ADD_NODE,
            "l": CONF_CHANGE_ADD_LEARNER_NODE,
            "r": CONF_CHANGE_REMOVE_NODE,
        }
        spec = args[1]
        node_id = int(spec[1:])
        c = self.cluster
        if spec[0] in "vl" and node_id not in c.members:
            c.add_member(node_id, None)
        cc = ConfChange(type=kinds[spec[0]], node_id=node_id)
        return self._traced(lambda: c.node(int(args[0])).propose_conf_change(cc))

    def cmd_tick_heartbeat(self, args: list[str]) -> list[str]:
        n = int(args[1]) if len(args) > 1 else 1
        return self._traced(lambda: self.cluster.tick(int(args[0]), n))

    def cmd_tick_election(self, args: list[str]) -> list[str]:
        id_ = int(args[0])
        n = self.cluster.raft(id_).randomized_election_timeout
        return self._traced(lambda: self.cluster.tick(id_, n))

    def cmd_isolate(self, args: list[str]) -> list[str]:
        self.cluster.isolate(int(args[0]))
        return ["ok"]

    def cmd_cut(self, args: list[str]) -> list[str]:
        self.cluster.cut(int(args[0]), int(args[1]))
        return ["ok"]

    def cmd_recover(self, args: list[str]) -> list[str]:
        self.cluster.recover()
        return ["ok"]

    def cmd_stabilize(self, args: list[str]) -> list[str]:
        ids = [int(a) for a in args] or None
        return self._traced(lambda: self.cluster.stabilize(ids))

    def cmd_deliver_msgs(self, args: list[str]) -> list[str]:
        return self._traced(lambda: self.cluster.deliver(int(args[0])))

    def cmd_process_ready(self, args: list[str]) -> list[str]:
        return self._traced(lambda: self.cluster.process(int(args[0])))

    def cmd_read_index(self, args: list[str]) -> list[str]:
        return self._traced(lambda: self.cluster.node(int(args[0])).read_index(args[1].encode()))

    def cmd_transfer_leader(self, args: list[str]) -> list[str]:
        c = self.cluster
        return self._traced(lambda: c.node(int(args[0])).transfer_leader(int(args[1])))

    def cmd_compact(self, args: list[str]) -> list[str]:
        m = self.cluster.members[int(args[0])]
        applied = m.applied[-1].index
        m.storage.create_snapshot(applied, m.conf_state, b"")
        m.storage.compact(applied)
        return [f"compacted to {applied}"]

    def cmd_restart(self, args: list[str]) -> list[str]:
        self.cluster.restart(int(args[0]))
        return ["ok"]

    def cmd_status(self, args: list[str]) -> list[str]:
        n = self.cluster.node(int(args[0]))
        st = n.status()
        lines = [
            f"{STATE_NAMES[st.soft_state.raft_state]} term={st.hard_state.term} "
            f"lead={st.soft_state.lead} commit={st.hard_state.commit} applied={st.applied}"
        ]
        if st.soft_state.raft_state == StateType.LEADER:
            for id_, pr in sorted(st.progress.items()):
                learner = " learner" if pr.is_learner else ""
                lines.append(f"{id_}: {pr.state.name} match={pr.match} next={pr.next}{learner}")
        return lines

    def cmd_raft_log(self, args: list[str]) -> list[str]:
        return [describe_entry(e) for e in self.cluster.log_of(int(args[0]))] or ["(empty)"]


def run_file(path: pathlib.Path, rewrite: bool) -> None:
    blocks = parse(path.read_text())
    scenario = Scenario()
    chunks = []
    mismatches = []
    for cmd, expected in blocks:
        got = scenario.run(cmd)
        chunks.append(cmd + "\n----\n" + "\n".join(got) + "\n")
        if got != expected:
            mismatches.append(
                f"{cmd}\n--- expected\n" + "\n".join(expected) + "\n--- got\n" + "\n".join(got)
            )
    if rewrite:
        path.write_text(_keep_header(path) + "\n".join(chunks))
        return
    assert not mismatches, f"{path.name}: output differs (pytest --rewrite regenerates):\n\n" + (
        "\n\n".join(mismatches[:3])
    )


def _keep_header(path: pathlib.Path) -> str:
    """The leading comment lines of a scenario file (they explain it; kept on rewrite)."""
    head = []
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            head.append(line)
            continue
        break
    return "\n".join(head).rstrip() + "\n\n" if head else ""


@pytest.mark.parametrize("path", sorted(TESTDATA.glob("*.txt")), ids=lambda p: p.stem)
def test_scenario(path: pathlib.Path, rewrite: bool) -> None:
    run_file(path, rewrite)
