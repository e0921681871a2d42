"""Fixtures of the cluster tests."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from tests.cluster.support import assert_same_hashkv, petcd_cluster
from tests.support.process import EtcdCluster


@pytest.fixture
def cluster3(tmp_path: pathlib.Path) -> Iterator[EtcdCluster]:
    """Three petcd members; after the test every member has the same HashKV."""
    cluster = petcd_cluster(3, tmp_path / "c3")
    try:
        yield cluster
        assert_same_hashkv(cluster.members)
    finally:
        cluster.cleanup()
