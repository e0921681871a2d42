"""Differential: the same ~100 unary calls (tests/server's etcd differential list) against petcd
on the native front end and on grpcio, the reference: every answer and status must match."""

from __future__ import annotations

import pathlib

from tests.server.test_api_differential import CALLS, _run
from tests.support.petcd_process import PetcdProcess


def test_native_answers_match_grpcio(tmp_path: pathlib.Path) -> None:
    answers = {}
    for frontend in ("grpcio", "native"):
        with PetcdProcess(tmp_path / frontend, extra_args=["--grpc-frontend", frontend]) as member:
            answers[frontend] = _run(member.endpoint)
    assert len(answers["native"]) == len(CALLS)
    mismatches = [
        f"#{i} {CALLS[i][1]}\n--- grpcio\n{g}\n+++ native\n{n}"
        for i, (g, n) in enumerate(zip(answers["grpcio"], answers["native"]))
        if g != n
    ]
    assert not mismatches, "\n\n".join(mismatches[:12])
