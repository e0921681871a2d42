"""Snapshot save (etcdctl) → petcdutl snapshot restore → a new member serving the same data."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from petcd.client import Client
from tests.support.petcd_process import PetcdProcess
from tests.support.process import etcdctl, free_port

pytestmark = pytest.mark.integration
PETCDUTL = str(pathlib.Path(sys.executable).with_name("petcdutl"))


def test_save_restore_serves_the_same_data(tmp_path: pathlib.Path) -> None:
    snap = tmp_path / "backup.db"
    with PetcdProcess(tmp_path / "source") as source:
        with Client([source.endpoint]) as client:
            for i in range(50):
                client.put(f"r/{i:02d}", f"v{i}")
            client.delete("r/00")
            revision = client.get("r/01").header.revision
            expected_hash = client.hash_kv(revision).hash
        saved = etcdctl("3.5", source.endpoint, "snapshot", "save", str(snap))
        assert saved.returncode == 0, saved.stderr
    status = subprocess.run(
        [PETCDUTL, "snapshot", "status", str(snap), "-w", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(status.stdout)["revision"] == revision

    peer = free_port()
    data_dir = tmp_path / "restored"
    restore = subprocess.run(
        [
            PETCDUTL,
            "snapshot",
            "restore",
            str(snap),
            "--name",
            "restored",
            f"--data-dir={data_dir}",
            f"--initial-cluster=restored=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            "--initial-cluster-token=restore-token",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert restore.returncode == 0, restore.stderr
    # A snapshot with a broken trailer is refused, naming the file.
    broken = tmp_path / "broken.db"
    data = bytearray(snap.read_bytes())
    data[100] ^= 0xFF
    broken.write_bytes(bytes(data))
    refused = subprocess.run(
        [PETCDUTL, "snapshot", "restore", str(broken), f"--data-dir={tmp_path / 'x'}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and str(broken) in refused.stderr

    member = PetcdProcess(
        data_dir.parent / "restored-run",
        name="restored",
        peer_port=peer,
        cluster_token="restore-token",
        start=False,
    )
    member.member_dir.parent.mkdir(parents=True, exist_ok=True)
    data_dir.rename(member.member_dir)
    try:
        member.start()
        with Client([member.endpoint]) as client:
            assert client.get("r/", prefix=True, count_only=True).count == 49
            assert client.get("r/07").kvs[0].value == b"v7"
            assert client.hash_kv(revision).hash == expected_hash
            assert [m.name for m in client.member_list().members] == ["restored"]
            assert client.put("after", "restore").header.revision == revision + 1
    finally:
        member.cleanup()
