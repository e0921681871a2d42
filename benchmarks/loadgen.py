"""The loadgen yardstick (../shared/loadgen): build it once, run a scenario, parse its JSON line.

The loadgen is etcd's own Go client (clientv3) driving any v3 endpoint, so its figures for
etcd and for petcd are comparable. `build()` compiles it into .cache/loadgen (its build.sh
installs Go and etcd's client sources from Debian when missing) and rebuilds when main.go is
newer. `SCENARIOS` are the README's judged command lines, keyed by our figure names.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCE = pathlib.Path(os.environ.get("PETCD_LOADGEN_DIR", ROOT.parent / "shared" / "loadgen"))
BINARY = ROOT / ".cache" / "loadgen"
RUN_TIMEOUT_S = 600.0

_MANY = ["--clients", "64", "--conns", "8", "--total", "100000"]
SCENARIOS: dict[str, list[str]] = {
    "put": ["put", *_MANY],
    "put_1": ["put", "--clients", "1", "--total", "10000"],
    "range_linearizable": ["range", *_MANY],
    "range_serializable": ["range", "--consistency", "s", *_MANY],
    "txn_put": ["txn-put", *_MANY],
    "watch": [
        "watch",
        "--watchers",
        "1000",
        "--streams",
        "10",
        "--clients",
        "8",
        "--conns",
        "10",
        "--total",
        "10000",
    ],
}


def build() -> pathlib.Path:
    """The loadgen binary, built now if missing or older than its source."""
    source = SOURCE / "main.go"
    if BINARY.exists() and (
        not source.exists() or BINARY.stat().st_mtime >= source.stat().st_mtime
    ):
        return BINARY
    BINARY.parent.mkdir(parents=True, exist_ok=True)
    # build.sh changes directory before `go build -o`, so the output path must be absolute
    subprocess.run(
        [str(SOURCE / "build.sh"), str(BINARY.resolve())], check=True, timeout=RUN_TIMEOUT_S
    )
    assert BINARY.exists(), f"build.sh did not produce {BINARY}"
    return BINARY


def run(args: list[str], endpoints: str, timeout: float = RUN_TIMEOUT_S) -> dict[str, Any]:
    """Run `loadgen <args> --endpoints <endpoints> --json`; its JSON line as a dict."""
    binary = build()
    completed = subprocess.run(
        [str(binary), *args, "--endpoints", endpoints, "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"loadgen {' '.join(args)} failed: {completed.stderr.strip()[-500:]}")
    line = completed.stdout.strip().splitlines()[-1]
    figures: dict[str, Any] = json.loads(line)
    assert figures["op"] == args[0]
    return figures
