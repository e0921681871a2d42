"""Fixtures of the transport tests: `members(id, ...)` makes started test members."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest

from tests.transport.helpers import MemberFactory, member_factory


@pytest.fixture
async def members(tmp_path: pathlib.Path) -> AsyncIterator[MemberFactory]:
    async for make in member_factory(tmp_path):
        yield make
