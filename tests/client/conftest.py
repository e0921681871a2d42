"""Run the client tests against petcd as well as real etcd 3.5.

The modules listed in PETCD_MODULES get every `etcd35`/`etcd35_module` test twice: once against
etcd 3.5.1 and once against a petcd member, so the client and petcd are both checked against the
real thing. Modules that need what petcd does not serve yet (auth, multi-member clusters) run
against etcd only.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from tests.support.petcd_process import PetcdProcess
from tests.support.process import EtcdProcess, require_binary

PETCD_MODULES = {"test_kv", "test_lease", "test_watch", "test_maintenance", "test_concurrency"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if not {"etcd35", "etcd35_module"} & set(metafunc.fixturenames):
        return
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    targets = ["etcd", "petcd"] if module in PETCD_MODULES else ["etcd"]
    metafunc.parametrize("target", targets, indirect=True, scope="module")


@pytest.fixture(scope="module")
def target(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _start(target: str, data_dir: pathlib.Path) -> EtcdProcess:
    if target == "petcd":
        return PetcdProcess(data_dir)
    require_binary("3.5")
    return EtcdProcess("3.5", data_dir)


@pytest.fixture
def etcd35(target: str, tmp_path: pathlib.Path) -> Iterator[EtcdProcess]:
    with _start(target, tmp_path / target) as server:
        yield server


@pytest.fixture(scope="module")
def etcd35_module(target: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdProcess]:
    with _start(target, tmp_path_factory.mktemp(target)) as server:
        yield server
