"""pytest fixtures that start real servers; `tests/conftest.py` re-exports them.

- `etcd35`, `etcd34`: a fresh single member for one test (data in the test's tmp_path).
- `etcd35_module`: one etcd 3.5 member shared by a test module (tests use distinct keys).
- `etcd_factory`: start more servers inside a test; all are stopped at teardown.
A missing binary fails the test, naming it (`make system-deps` installs them all).
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.process import EtcdCluster, EtcdProcess, require_binary


def _require(version: str) -> None:
    """A missing reference binary fails the test: a skipped comparison would pass silently."""
    try:
        require_binary(version)
    except FileNotFoundError as exc:
        pytest.fail(f"{exc} (`make test` installs it: make system-deps)")


@pytest.fixture
def etcd35(tmp_path: pathlib.Path) -> Iterator[EtcdProcess]:
    _require("3.5")
    with EtcdProcess("3.5", tmp_path / "etcd35") as server:
        yield server


@pytest.fixture
def etcd34(tmp_path: pathlib.Path) -> Iterator[EtcdProcess]:
    _require("3.4")
    with EtcdProcess("3.4", tmp_path / "etcd34") as server:
        yield server


@pytest.fixture(scope="module")
def etcd35_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    _require("3.5")
    with EtcdProcess("3.5", tmp_path_factory.mktemp("etcd35")) as server:
        yield server


@pytest.fixture
def etcd_factory(tmp_path: pathlib.Path) -> Iterator[Callable[..., EtcdProcess]]:
    started: list[EtcdProcess | EtcdCluster] = []

    def start(version: str = "3.5", **kwargs: Any) -> EtcdProcess:
        _require(version)
        server = EtcdProcess(version, tmp_path / f"etcd-{len(started)}", **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.cleanup()


@pytest.fixture
def etcd_cluster_factory(tmp_path: pathlib.Path) -> Iterator[Callable[..., EtcdCluster]]:
    started: list[EtcdCluster] = []

    def start(n: int = 3, version: str = "3.5", **kwargs: Any) -> EtcdCluster:
        _require(version)
        cluster = EtcdCluster(n, version, tmp_path / f"cluster-{len(started)}", **kwargs)
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        cluster.cleanup()
