"""`make bench`: run every benchmarks/bench_*.py module's main(), in name order.

`python -m benchmarks.run_all raft wal` runs only the modules whose names contain those words.
"""

from __future__ import annotations

import importlib
import pathlib
import sys
import time


def main() -> int:
    wanted = sys.argv[1:]
    here = pathlib.Path(__file__).resolve().parent
    failed = []
    for path in sorted(here.glob("bench_*.py")):
        name = path.stem
        if wanted and not any(w in name for w in wanted):
            continue
        print(f"== {name}", flush=True)
        started = time.monotonic()
        try:
            importlib.import_module(f"benchmarks.{name}").main()
        except Exception as exc:  # a failed benchmark must not hide the others' figures
            failed.append(name)
            print(f"!! {name} failed: {exc!r}", flush=True)
        print(f"== {name} done in {time.monotonic() - started:.1f} s", flush=True)
    if failed:
        print(f"failed benchmarks: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
