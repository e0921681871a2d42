"""Fixtures shared by every test package live in tests/support/fixtures.py; re-exported here."""

from tests.support.fixtures import (  # noqa: F401 - pytest finds fixtures by name
    etcd34,
    etcd35,
    etcd35_module,
    etcd_cluster_factory,
    etcd_factory,
)
