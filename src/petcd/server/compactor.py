"""Auto compaction (`--auto-compaction-mode`, `--auto-compaction-retention`), on the leader.

etcd 3.5's two modes (etcd-api-facts §4.2):
- periodic: the retention is a duration ("1" alone means hours); every
  min(retention, 1 h) / 10 the compactor notes the current revision and compacts to the
  revision it noted `retention` ago.
- revision: every 5 minutes it compacts to `current revision − retention`.

Worked example (periodic, retention 10 s, so a sample every 1 s): samples (t=0 s, rev 5),
(1 s, 9), ... (10 s, 40), (11 s, 44); at t=11 s the newest sample at least 10 s old is
(1 s, 9), so the compactor proposes Compact(9), once.

Only the leader proposes (followers keep sampling so a new leader can compact at once). A
compaction the store refuses because it is already at or past that revision is ignored.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable

from petcd import errors
from petcd.server.config import ConfigError, parse_duration_s

log = logging.getLogger("petcd.compactor")

REVISION_MODE_INTERVAL_S = 300.0
MAX_PERIODIC_INTERVAL_S = 3600.0


def parse_retention(mode: str, text: str) -> float:
    """Retention in seconds (periodic) or revisions (revision); 0 disables."""
    text = text.strip()
    if mode == "revision":
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"invalid --auto-compaction-retention {text!r}") from None
        if value < 0:
            raise ConfigError("--auto-compaction-retention must not be negative")
        return float(value)
    if text.isdigit():
        return float(int(text)) * 3600.0
    try:
        return parse_duration_s(text)
    except ValueError:
        raise ConfigError(f"invalid --auto-compaction-retention {text!r}") from None


class Compactor:
    def __init__(
        self,
        mode: str,
        retention: float,
        current_revision: Callable[[], int],
        is_leader: Callable[[], bool],
        compact: Callable[[int], Awaitable[None]],
        clock: Callable[[], float],
        revision_interval_s: float = REVISION_MODE_INTERVAL_S,
    ) -> None:
        assert mode in ("periodic", "revision")
        assert retention > 0
        self.mode = mode
        self.retention = retention
        self._current_revision = current_revision
        self._is_leader = is_leader
        self._compact = compact
        self._clock = clock
        self._last_compacted = 0
        if mode == "periodic":
            self.interval_s = min(retention, MAX_PERIODIC_INTERVAL_S) / 10
        else:
            self.interval_s = revision_interval_s
        samples_max = int(retention / self.interval_s) + 2 if mode == "periodic" else 1
        self._samples: collections.deque[tuple[float, int]] = collections.deque(
            maxlen=max(samples_max, 2)
        )

    def target(self) -> int:
        """The revision to compact to now (0: nothing to do). Records a sample (periodic)."""
        revision = self._current_revision()
        if self.mode == "revision":
            return max(0, revision - int(self.retention))
        now = self._clock()
        self._samples.append((now, revision))
        found = 0
        for at, rev in self._samples:
            if now - at >= self.retention - 1e-9:
                found = rev
            else:
                break
        return found

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            target = self.target()
            if target <= self._last_compacted or not self._is_leader():
                continue
            try:
                await self._compact(target)
                self._last_compacted = target
                log.info("auto compaction", extra={"revision": target})
            except (errors.CompactedError, errors.FutureRevisionError):
                self._last_compacted = target
            except errors.PetcdError as exc:
                with contextlib.suppress(Exception):
                    log.warning("auto compaction failed: %s", exc.message)
