"""etcdctl 3.4 and 3.5 against a real petcd member: streams, snapshots, limits and alarms."""

from __future__ import annotations

import hashlib
import json
import pathlib
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from petcd import errors
from petcd.client import Client
from tests.support.petcd_process import PetcdProcess
from tests.support.process import etcdctl, require_binary, wait_for

pytestmark = pytest.mark.integration
VERSIONS = ["3.5", "3.4"]


class LineReader:
    """Collects a subprocess's stdout lines in a thread so a test can await them."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def wait_lines(self, count: int, timeout: float = 10.0) -> list[str]:
        wait_for(lambda: len(self.snapshot()) >= count, timeout, what=f"{count} lines")
        return self.snapshot()

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _popen_etcdctl(version: str, endpoint: str, *args: str) -> LineReader:
    binary = require_binary(version, ctl=True)
    proc = subprocess.Popen(
        [binary, f"--endpoints={endpoint}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
    )
    return LineReader(proc)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PetcdProcess]:
    with PetcdProcess(tmp_path_factory.mktemp("petcd")) as member:
        yield member


def ok(version: str, endpoint: str, *args: str, stdin: str | None = None) -> str:
    result = etcdctl(version, endpoint, *args, input=stdin)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("version", VERSIONS)
def test_watch_sees_interleaved_writes_in_order(version: str, server: PetcdProcess) -> None:
    prefix = f"watch{version}/"
    ok(version, server.endpoint, "put", f"{prefix}before", "0")
    revision = json.loads(ok(version, server.endpoint, "get", f"{prefix}before", "-w", "json"))[
        "header"
    ]["revision"]
    # From the revision of the first put, so the watch misses nothing whenever it starts.
    reader = _popen_etcdctl(
        version, server.endpoint, "watch", prefix, "--prefix", f"--rev={revision}", "--prev-kv"
    )
    try:
        lines = reader.wait_lines(3)
        assert lines[:3] == ["PUT", f"{prefix}before", "0"]
        for i in range(1, 4):
            ok(version, server.endpoint, "put", f"{prefix}k", f"v{i}")
            # PUT, (prev key, prev value), key, value
            lines = reader.wait_lines(1 + 5 * i)
        ok(version, server.endpoint, "del", f"{prefix}k")
        lines = reader.wait_lines(len(lines) + 5)
    finally:
        reader.close()
    assert lines[3:6] == ["PUT", f"{prefix}k", "v1"]
    assert lines[6:11] == ["PUT", f"{prefix}k", "v1", f"{prefix}k", "v2"]
    assert lines[11:16] == ["PUT", f"{prefix}k", "v2", f"{prefix}k", "v3"]
    assert lines[16:21] == ["DELETE", f"{prefix}k", "v3", f"{prefix}k", ""]


@pytest.mark.parametrize("version", VERSIONS)
def test_lease_keep_alive_stream_keeps_lease(version: str, server: PetcdProcess) -> None:
    out = ok(version, server.endpoint, "lease", "grant", "3")
    lease = out.split()[1]
    ok(version, server.endpoint, "put", f"ka{version}", "v", f"--lease={lease}")
    reader = _popen_etcdctl(version, server.endpoint, "lease", "keep-alive", lease)
    try:
        lines = reader.wait_lines(3, timeout=15)
        assert all(f"lease {lease} keepalived with TTL(3)" == line for line in lines[:3])
        # Kept alive past its TTL: the key is still there.
        assert f"ka{version}" in ok(version, server.endpoint, "get", f"ka{version}")
    finally:
        reader.close()
    ttl = ok(version, server.endpoint, "lease", "timetolive", lease)
    assert "granted with TTL(3s)" in ttl


def test_lease_expires_within_ttl_plus_one_second(server: PetcdProcess) -> None:
    with Client([server.endpoint]) as client:
        granted_at = time.monotonic()
        lease = client.lease_grant(2).ID
        client.put("expiring", "v", lease=lease)
        wait_for(lambda: client.get("expiring").count == 0, timeout=10, interval=0.05)
        elapsed = time.monotonic() - granted_at
        assert client.lease_time_to_live(lease).TTL == -1
    assert 1.5 <= elapsed <= 3.0 + 0.5, elapsed


def test_lease_minimum_ttl_is_raised(server: PetcdProcess) -> None:
    with Client([server.endpoint]) as client:
        granted = client.lease_grant(1)
        assert granted.TTL == 2
        with pytest.raises(errors.LeaseTTLTooLargeError):
            client.lease_grant(9_000_000_001)
        with pytest.raises(errors.LeaseExistError):
            client.lease_grant(5, lease_id=granted.ID)
        with pytest.raises(errors.LeaseNotFoundError):
            client.put("x", "y", lease=granted.ID + 12345)
        with pytest.raises(errors.LeaseNotFoundError):
            client.lease_revoke(granted.ID + 12345)


@pytest.mark.parametrize("version", VERSIONS)
def test_snapshot_save_writes_backend_with_checksum(
    version: str, server: PetcdProcess, tmp_path: pathlib.Path
) -> None:
    ok(version, server.endpoint, "put", "snap-key", "snap-value")
    path = tmp_path / "snap.db"
    out = etcdctl(version, server.endpoint, "snapshot", "save", str(path))
    assert out.returncode == 0, out.stderr
    assert "Snapshot saved at" in out.stdout + out.stderr
    data = path.read_bytes()
    assert len(data) > 32
    # etcdctl keeps the SHA-256 trailer; it checked it against the stream as it wrote.
    body, digest = data[:-32], data[-32:]
    assert hashlib.sha256(body).digest() == digest
    assert b"snap-value" in body


def test_request_limits(server: PetcdProcess) -> None:
    with Client([server.endpoint]) as client:
        with pytest.raises(errors.RequestTooLargeError):
            client.put("big", b"x" * (1_572_864 + 10))
        with pytest.raises(errors.PetcdError) as too_large:
            client.put("bigger", b"x" * (2_097_152 + 10))
        assert too_large.value.code == errors.GrpcCode.RESOURCE_EXHAUSTED
        from petcd.client import op_put

        with pytest.raises(errors.TooManyOpsError):
            client.txn([], [op_put(f"k{i}", "v") for i in range(129)], [])
        client.txn([], [op_put(f"k{i}", "v") for i in range(128)], [])
        with pytest.raises(errors.DuplicateKeyError):
            client.txn([], [op_put("same", "1"), op_put("same", "2")], [])
        with pytest.raises(errors.EmptyKeyError):
            client.put("", "v")
        assert client.get("big").count == 0


def test_quota_raises_nospace_and_recovers(petcd_factory: object, tmp_path: pathlib.Path) -> None:
    quota = 4 * 1024 * 1024
    member = PetcdProcess(tmp_path / "quota", extra_args=[f"--quota-backend-bytes={quota}"])
    try:
        with Client([member.endpoint]) as client:
            value = b"v" * 100_000
            written = 0
            with pytest.raises(errors.NoSpaceError):
                for i in range(200):
                    client.put(f"fill/{i:04d}", value)
                    written += 1
            assert written > 5
            alarms = client.alarm_list().alarms
            assert [a.alarm for a in alarms] == [1]
            # Reads, deletes, compaction and defragmentation still work.
            assert client.get("fill/", prefix=True, count_only=True).count == written
            with pytest.raises(errors.NoSpaceError):
                client.put("small", "v")
            deleted = client.delete("fill/", prefix=True)
            client.compact(deleted.header.revision, physical=True)
            client.defragment()
            status = etcdctl("3.5", member.endpoint, "endpoint", "status")
            assert "alarm:NOSPACE" in status.stdout
            client.alarm_disarm()
            assert client.alarm_list().alarms == []
            client.put("small", "v")
            assert client.get("small").kvs[0].value == b"v"
        # The alarm survives a restart until disarmed (checked above); disarmed stays so.
        member.restart()
        with Client([member.endpoint]) as client:
            assert client.alarm_list().alarms == []
    finally:
        member.cleanup()


def test_periodic_auto_compaction(tmp_path: pathlib.Path) -> None:
    member = PetcdProcess(
        tmp_path / "autocompact",
        extra_args=["--auto-compaction-mode=periodic", "--auto-compaction-retention=1s"],
    )
    try:
        with Client([member.endpoint]) as client:
            first = client.put("ac", "1").header.revision
            client.put("ac", "2")

            def compacted() -> bool:
                try:
                    client.get("ac", revision=first)
                except errors.CompactedError:
                    return True
                return False

            wait_for(compacted, timeout=10, interval=0.1)
            assert client.get("ac").kvs[0].value == b"2"
    finally:
        member.cleanup()


def test_revision_auto_compaction(tmp_path: pathlib.Path) -> None:
    member = PetcdProcess(
        tmp_path / "revcompact",
        extra_args=[
            "--auto-compaction-mode=revision",
            "--auto-compaction-retention=5",
            "--auto-compaction-revision-interval=200ms",
        ],
    )
    try:
        with Client([member.endpoint]) as client:
            for i in range(20):
                client.put("rc", str(i))
            current = client.get("rc").header.revision

            def compacted_to_retention() -> bool:
                try:
                    client.get("rc", revision=current - 6)
                except errors.CompactedError:
                    return True
                return False

            wait_for(compacted_to_retention, timeout=10, interval=0.1)
            assert client.get("rc", revision=current - 5).kvs[0].value == b"14"
    finally:
        member.cleanup()
