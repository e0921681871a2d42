"""Fixtures for server tests: real petcd members on free ports."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.petcd_process import PetcdProcess


@pytest.fixture
def petcd(tmp_path: pathlib.Path) -> Iterator[PetcdProcess]:
    with PetcdProcess(tmp_path / "petcd") as server:
        yield server


@pytest.fixture(scope="module")
def petcd_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PetcdProcess]:
    with PetcdProcess(tmp_path_factory.mktemp("petcd")) as server:
        yield server


@pytest.fixture
def petcd_factory(tmp_path: pathlib.Path) -> Iterator[Callable[..., PetcdProcess]]:
    started: list[PetcdProcess] = []

    def start(**kwargs: Any) -> PetcdProcess:
        server = PetcdProcess(tmp_path / f"petcd-{len(started)}", **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.cleanup()
