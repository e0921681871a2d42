"""A real `petcd` member process for integration tests, with EtcdProcess's shape.

petcd takes etcd's flags, so the command line is EtcdProcess's; only the binary differs.
"""

from __future__ import annotations

import os
import pathlib
import sys
from collections.abc import Sequence

from tests.support.process import EtcdProcess

PETCD_BIN = str(pathlib.Path(sys.executable).parent / "petcd")


class PetcdProcess(EtcdProcess):
    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        start: bool = True,
        **kwargs: object,
    ) -> None:
        super().__init__(
            PETCD_BIN,
            data_dir,
            extra_args=extra_args,
            env=env,
            start=start,
            **kwargs,  # type: ignore[arg-type]
        )
        self.version = "petcd"

    def __repr__(self) -> str:
        return f"PetcdProcess(endpoint={self.endpoint!r})"
