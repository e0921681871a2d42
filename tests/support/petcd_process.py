"""A real `petcd` member process for integration tests, with EtcdProcess's shape.

petcd takes etcd's flags, so the command line is EtcdProcess's; only the binary differs.
`PETCD_TEST_FRONTEND=grpcio|native` picks the gRPC front end for every member a test starts
(unset: petcd's default), so the whole server suite runs on either.
"""

from __future__ import annotations

import os
import pathlib
import sys
from collections.abc import Sequence

from tests.support.process import EtcdProcess

PETCD_BIN = str(pathlib.Path(sys.executable).parent / "petcd")
FRONTEND = os.environ.get("PETCD_TEST_FRONTEND", "")


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
        if FRONTEND and not any(a.startswith("--grpc-frontend") for a in extra_args):
            extra_args = [*extra_args, "--grpc-frontend", FRONTEND]
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
