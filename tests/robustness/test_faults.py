"""Robustness: a 3-member petcd cluster under writes, compare-and-swap and a live watch while
random faults from one seed hit it: kill -9 and restart (leader or not), graceful restarts,
symmetric and one-way partitions, lossy and slow links, leadership moves. Then every member
must agree, and the history must hold every acknowledged write exactly where it was
acknowledged.

`make test` runs it for PETCD_ROBUSTNESS_S (default 20) seconds; `make robustness` for longer.
A failure prints its seed: PETCD_ROBUSTNESS_SEED=n replays the same fault schedule (the
timing of the load around it is the machine's).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from petcd import errors
from petcd.client import Client, compare_mod, op_get, op_put
from tests.cluster.support import (
    assert_same_hashkv,
    member_id,
    petcd_cluster,
    set_faults,
    wait_leader,
)
from tests.support.process import EtcdCluster, EtcdProcess, wait_for

SECONDS = float(os.environ.get("PETCD_ROBUSTNESS_S", "20"))
SEED = int(os.environ.get("PETCD_ROBUSTNESS_SEED", "0")) or random.SystemRandom().randrange(
    1, 1 << 31
)
WRITERS = 3
COUNTER = b"counter"

pytestmark = [pytest.mark.integration, pytest.mark.timeout(SECONDS + 240)]


@dataclass
class Outcomes:
    """What the clients were told, and what stays unknown (a failed call may have applied)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acked: dict[bytes, tuple[bytes, int]] = field(default_factory=dict)  # key -> (value, rev)
    failed_puts: int = 0
    cas_acked: int = 0
    cas_unknown: int = 0
    watched: list[tuple[int, bytes, bytes]] = field(default_factory=list)  # live watch events
    watch_restarts: int = 0
    errors: list[str] = field(default_factory=list)


def writer(endpoints: list[str], n: int, stop: threading.Event, out: Outcomes) -> None:
    """Unique keys, each written once: an acknowledged one must be there at its revision."""
    with Client(endpoints, timeout=3.0) as client:
        i = 0
        while not stop.is_set():
            key = b"w%d/%07d" % (n, i)
            value = b"%d" % i
            i += 1
            try:
                revision = client.put(key, value).header.revision
            except errors.PetcdError:
                with out.lock:
                    out.failed_puts += 1
                continue
            with out.lock:
                out.acked[key] = (value, revision)


def incrementer(endpoints: list[str], stop: threading.Event, out: Outcomes) -> None:
    """A counter advanced by compare-and-swap: every acknowledged swap counts exactly once."""
    with Client(endpoints, timeout=3.0) as client:
        while not stop.is_set():
            try:
                current = client.get(COUNTER)
            except errors.PetcdError:
                continue
            value = int(current.kvs[0].value) if current.kvs else 0
            mod = current.kvs[0].mod_revision if current.kvs else 0
            try:
                response = client.txn(
                    [compare_mod(COUNTER, "=", mod)],
                    [op_put(COUNTER, b"%d" % (value + 1))],
                    [op_get(COUNTER)],
                )
            except errors.PetcdError:
                with out.lock:
                    out.cas_unknown += 1
                continue
            if response.succeeded:
                with out.lock:
                    out.cas_acked += 1


def watcher(endpoints: list[str], stop: threading.Event, out: Outcomes) -> None:
    """Watch every key from revision 2 on, resuming after the last event when a watch ends."""
    next_revision = 2
    while not stop.is_set():
        try:
            with Client(endpoints, timeout=3.0) as client:
                watch = client.watch(b"\x00", from_key=True, start_revision=next_revision)
                while not stop.is_set():
                    try:
                        response = watch.get(timeout=0.5)
                    except TimeoutError:
                        continue
                    if response is None:
                        break
                    for event in response.events:
                        kv = event.kv
                        with out.lock:
                            out.watched.append((kv.mod_revision, kv.key, kv.value))
                        next_revision = kv.mod_revision + 1
                watch.cancel()
        except errors.PetcdError as exc:
            with out.lock:
                out.errors.append(f"watch: {exc}")
        with out.lock:
            out.watch_restarts += 1


class Faults:
    """One fault at a time, chosen and timed by the seeded generator."""

    def __init__(self, cluster: EtcdCluster, rng: random.Random) -> None:
        self.cluster = cluster
        self.rng = rng
        self.members = cluster.members
        self.ids = {m.name: member_id(m) for m in self.members}
        self.log: list[str] = []

    def victim(self) -> EtcdProcess:
        if self.rng.random() < 0.5:
            try:
                return wait_leader(self.members, timeout=10)
            except TimeoutError:
                pass
        return self.rng.choice(self.members)

    def others(self, member: EtcdProcess) -> list[int]:
        return [self.ids[m.name] for m in self.members if m is not member]

    def hold(self) -> None:
        time.sleep(self.rng.uniform(0.3, 2.5))  # how long the fault lasts (not a wait for state)

    def kill_restart(self) -> None:
        member = self.victim()
        member.kill()
        self.hold()
        member.launch()

    def graceful_restart(self) -> None:
        member = self.victim()
        member.stop()
        self.hold()
        member.launch()

    def partition(self) -> None:
        member = self.victim()
        direction = self.rng.choice(["both", "in", "out"])
        set_faults(member, {"partition": self.others(member), "direction": direction})
        self.hold()
        set_faults(member, {"heal": True})

    def lossy(self) -> None:
        member = self.victim()
        set_faults(member, {"drop_rate": self.rng.choice([0.1, 0.3, 0.6])})
        self.hold()
        set_faults(member, {"drop_rate": 0.0})

    def slow(self) -> None:
        member = self.victim()
        set_faults(member, {"delay_s": self.rng.choice([0.02, 0.1, 0.4])})
        self.hold()
        set_faults(member, {"delay_s": 0.0})

    def move_leader(self) -> None:
        leader = wait_leader(self.members, timeout=10)
        target = self.rng.choice([m for m in self.members if m is not leader])
        with Client([leader.endpoint], timeout=5.0) as client:
            try:
                client.move_leader(self.ids[target.name])
            except errors.PetcdError as exc:  # e.g. the target was behind; not a failure
                self.log.append(f"move_leader refused: {exc}")

    def recover(self) -> None:
        """Undo whatever fault an error left in place: heal every link, start every member."""
        for member in self.members:
            if member.running():
                with contextlib.suppress(Exception):
                    set_faults(member, {"heal": True, "drop_rate": 0.0, "delay_s": 0.0})
        for member in self.members:
            if not member.running():
                member.launch()
        for member in self.members:
            member.wait_ready(timeout=60)

    def run(self, seconds: float) -> None:
        actions: list[Callable[[], None]] = [
            self.kill_restart,
            self.kill_restart,
            self.graceful_restart,
            self.partition,
            self.partition,
            self.lossy,
            self.slow,
            self.move_leader,
        ]
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            action = self.rng.choice(actions)
            self.log.append(action.__name__)
            action()
            for member in self.members:  # a restarted member serves again before the next fault
                if member.running():
                    member.wait_ready(timeout=60)
            time.sleep(self.rng.uniform(0.2, 1.0))  # calm between faults


def test_random_faults_lose_no_acknowledged_write(tmp_path: pathlib.Path) -> None:
    print(f"robustness seed {SEED} ({SECONDS:.0f} s): PETCD_ROBUSTNESS_SEED={SEED} to replay")
    rng = random.Random(SEED)
    cluster = petcd_cluster(
        3,
        tmp_path,
        ["--snapshot-count", "300", "--experimental-snapshot-catchup-entries", "100"],
    )
    out = Outcomes()
    stop = threading.Event()
    endpoints = cluster.endpoints
    threads = [
        threading.Thread(target=writer, args=(endpoints, n, stop, out)) for n in range(WRITERS)
    ]
    threads.append(threading.Thread(target=incrementer, args=(endpoints, stop, out)))
    watch_stop = threading.Event()
    watch_thread = threading.Thread(target=watcher, args=(endpoints, watch_stop, out))
    faults = Faults(cluster, rng)
    try:
        for thread in [*threads, watch_thread]:
            thread.start()
        try:
            faults.run(SECONDS)
        finally:
            faults.recover()
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
        print(f"faults: {', '.join(faults.log)}")
        wait_leader(cluster.members, timeout=30)
        revision = assert_same_hashkv(cluster.members, timeout=60)
        print(
            f"{len(out.acked)} puts acknowledged ({out.failed_puts} failed), "
            f"{out.cas_acked} swaps ({out.cas_unknown} unknown), revision {revision}"
        )
        assert len(out.acked) > 0 and out.cas_acked > 0, "no progress at all under faults"
        with Client(endpoints, timeout=10.0) as client:
            # Every acknowledged put is there with its value, at the revision it was told.
            stored = {
                kv.key: (kv.value, kv.mod_revision) for kv in client.get(b"w", prefix=True).kvs
            }
            missing = {k: v for k, v in out.acked.items() if stored.get(k) != v}
            assert not missing, f"acknowledged puts lost or moved: {sorted(missing.items())[:10]}"
            # Every acknowledged swap counted once; a failed one may or may not have applied.
            counter = client.get(COUNTER)
            final = int(counter.kvs[0].value) if counter.kvs else 0
            assert out.cas_acked <= final <= out.cas_acked + out.cas_unknown
            # The history: one event per revision (every write is one put), nothing skipped.
            history: dict[int, tuple[bytes, bytes]] = {}
            with client.watch(b"\x00", from_key=True, start_revision=2) as watch:
                for response in watch:
                    for event in response.events:
                        history[event.kv.mod_revision] = (event.kv.key, event.kv.value)
                    if response.events and response.events[-1].kv.mod_revision >= revision:
                        break
        assert sorted(history) == list(range(2, revision + 1))
        for key, (value, rev) in out.acked.items():
            assert history[rev] == (key, value)
        # The live watch, through every fault, saw the same history, in order, each event once.
        wait_for(
            lambda: bool(out.watched) and out.watched[-1][0] >= revision,
            timeout=30,
            what=f"the live watch reaching revision {revision}",
        )
        watch_stop.set()
        watch_thread.join(timeout=30)
        revisions = [rev for rev, _k, _v in out.watched]
        assert revisions == sorted(set(revisions)), "the live watch repeated or reordered events"
        assert revisions[0] == 2 and revisions == list(range(2, revisions[-1] + 1))
        assert all(history[rev] == (key, value) for rev, key, value in out.watched)
        print(f"live watch: {len(out.watched)} events, {out.watch_restarts} restarts")
    finally:
        stop.set()
        watch_stop.set()
        for thread in [*threads, watch_thread]:
            if thread.is_alive():
                thread.join(timeout=30)
        cluster.cleanup()
