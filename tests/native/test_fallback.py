"""Where the extension cannot be imported, `--grpc-frontend native` serves on grpcio, warning."""

from __future__ import annotations

import pathlib
import subprocess
import sys

from tests.support.process import free_port, wait_serving

_RUN_WITHOUT_EXTENSION = """
import sys
sys.modules["petcd.api.native._h2"] = None  # as if the build had failed
from petcd.main import main
sys.argv = ["petcd", *sys.argv[1:]]
main()
"""


def test_missing_extension_falls_back_to_grpcio(tmp_path: pathlib.Path) -> None:
    client, peer = free_port(), free_port()
    log = (tmp_path / "petcd.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _RUN_WITHOUT_EXTENSION,
            "--data-dir",
            str(tmp_path / "data"),
            "--listen-client-urls",
            f"http://127.0.0.1:{client}",
            "--advertise-client-urls",
            f"http://127.0.0.1:{client}",
            "--listen-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-cluster",
            f"default=http://127.0.0.1:{peer}",
            "--grpc-frontend",
            "native",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_serving(f"127.0.0.1:{client}", alive=lambda: process.poll() is None)
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()
    text = (tmp_path / "petcd.log").read_text()
    assert "native gRPC front end unavailable, using grpcio" in text
    assert '"grpc_frontend": "grpcio"' in text
