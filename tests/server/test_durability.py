"""kill -9 under concurrent writes: every acknowledged write is there after restart."""

from __future__ import annotations

import pathlib
import threading

import pytest

from petcd import errors
from petcd.client import Client
from tests.support.petcd_process import PetcdProcess
from tests.support.process import wait_for

pytestmark = pytest.mark.integration
WRITERS = 8


def _writer(
    endpoint: str, index: int, acked: list[tuple[bytes, bytes]], stop: threading.Event
) -> None:
    n = 0
    with Client([endpoint], timeout=2.0) as client:
        while not stop.is_set():
            key = f"w{index}/{n:06d}".encode()
            value = f"value-{index}-{n}".encode()
            try:
                client.put(key, value)
            except errors.PetcdError:
                return  # the server is gone: this write is not acknowledged
            acked.append((key, value))
            n += 1


@pytest.mark.parametrize("snapshot_count", [100_000, 50])
def test_acknowledged_writes_survive_kill_9(tmp_path: pathlib.Path, snapshot_count: int) -> None:
    member = PetcdProcess(tmp_path / "member", extra_args=[f"--snapshot-count={snapshot_count}"])
    try:
        acked: list[list[tuple[bytes, bytes]]] = [[] for _ in range(WRITERS)]
        stop = threading.Event()
        threads = [
            threading.Thread(target=_writer, args=(member.endpoint, i, acked[i], stop))
            for i in range(WRITERS)
        ]
        for thread in threads:
            thread.start()
        wait_for(lambda: sum(len(a) for a in acked) >= 600, timeout=60, interval=0.01)
        member.kill()  # SIGKILL while the writers are mid-flight
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        total = sum(len(a) for a in acked)
        member.launch()
        member.wait_ready()
        with Client([member.endpoint]) as client:
            for writer_acked in acked:
                for key, value in writer_acked:
                    response = client.get(key, serializable=True)
                    assert response.count == 1, f"acknowledged {key!r} lost ({total} acked)"
                    assert response.kvs[0].value == value
            # Writes go on after the restart, at the next revision.
            before = client.get("w0/", prefix=True, count_only=True).header.revision
            assert client.put("after", "restart").header.revision == before + 1
        if snapshot_count < 1000:
            snaps = list((tmp_path / "member" / "member-data" / "member" / "snap").glob("*.snap"))
            assert snaps, "snapshots were taken every 50 entries"
    finally:
        member.cleanup()
