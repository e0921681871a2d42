"""Run one etcdctl script against two servers and compare the outputs after normalising.

A script is a list of steps; each step is an etcdctl argument list (optionally with stdin).
`{name}` in an argument is replaced by a value captured from an earlier step's output (e.g. the
lease id from `lease grant`). What differs legitimately between two servers — ports, member,
cluster and lease ids, sizes, timings, the patch version — is normalised away; everything else
(values, revisions, counts, error messages, exit codes) must be identical.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from tests.support.process import etcdctl


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    args: tuple[str, ...]
    stdin: str | None = None
    #: (name, regex with one group) to capture from stdout for later steps.
    capture: tuple[str, str] | None = None


def step(*args: str, stdin: str | None = None, capture: tuple[str, str] | None = None) -> Step:
    return Step(tuple(args), stdin, capture)


class Normaliser:
    """Replace run-specific values by stable placeholders (ids in order of appearance)."""

    _HEX_ID = re.compile(r"\b[0-9a-f]{14,16}\b")
    _DEC_ID = re.compile(r"\b\d{15,20}\b")
    _ENDPOINT = re.compile(r"(?:https?://)?127\.0\.0\.1:\d+")
    _RULES: tuple[tuple[re.Pattern[str], str], ...] = (
        (re.compile(r"took = [0-9.]+[µmn]?s"), "took = T"),
        (re.compile(r"\b3\.5\.\d+\b"), "3.5.x"),
        (re.compile(r"\b3\.4\.\d+\b"), "3.4.x"),
        (re.compile(r"remaining\(\d+s\)"), "remaining(Ns)"),
        (re.compile(r'"(dbSize|dbSizeInUse|raftIndex|raftAppliedIndex)":\d+'), r'"\1":N'),
        (re.compile(r"\b\d+(\.\d+)? ?[kMG]?B\b"), "SIZE"),
        (re.compile(r'"hash":\d+'), '"hash":H'),
        (re.compile(r'"TTL":\d+'), '"TTL":N'),
        # Remaining TTLs depend on how long each step took (etcdctl -w json says "ttl").
        (re.compile(r'"ttl":\d+'), '"ttl":N'),
        (re.compile(r"\| +\d+ \| +\d+ \|( +\|)"), "| IDX | IDX |\\1"),
        (re.compile(r"(true|false), (true|false), (\d+), \d+, \d+, "), r"\1, \2, \3, IDX, IDX, "),
    )

    def __init__(self) -> None:
        self._ids: dict[str, str] = {}

    def _id(self, match: re.Match[str]) -> str:
        value = match.group(0)
        return self._ids.setdefault(value, f"ID{len(self._ids) + 1}")

    # etcd lists a lease's keys in Go map order (random): compare them as sets.
    _KEY_LISTS = (
        (re.compile(r'"keys":\[([^\]]*)\]'), ",", '"keys":[{}]'),
        (re.compile(r"attached keys\(\[([^\]]*)\]\)"), " ", "attached keys([{}])"),
    )

    def __call__(self, text: str) -> str:
        for pattern, sep, template in self._KEY_LISTS:
            text = pattern.sub(
                lambda m, sep=sep, template=template: template.format(
                    sep.join(sorted(m.group(1).split(sep)))
                ),
                text,
            )
        text = self._ENDPOINT.sub("ENDPOINT", text)
        for pattern, replacement in self._RULES:
            text = pattern.sub(replacement, text)
        text = self._HEX_ID.sub(self._id, text)
        return self._DEC_ID.sub(self._id, text)


def run_script(
    version: str,
    endpoint: str,
    script: list[Step],
    substitute: Callable[[str], str] = lambda s: s,
) -> list[str]:
    """Run every step; returns one normalised transcript line-block per step."""
    captured: dict[str, str] = {}
    normalise = Normaliser()
    transcript: list[str] = []
    for item in script:
        args = [substitute(a.format(**captured)) for a in item.args]
        result = etcdctl(version, endpoint, *args, input=item.stdin)
        if item.capture is not None:
            name, pattern = item.capture
            match = re.search(pattern, result.stdout)
            assert match is not None, f"{args}: nothing to capture in {result.stdout!r}"
            captured[name] = match.group(1)
        stderr = "\n".join(line for line in result.stderr.splitlines() if not line.startswith("{"))
        block = f"$ etcdctl {' '.join(item.args)}\n[{result.returncode}]\n{result.stdout}{stderr}"
        transcript.append(normalise(block))
    return transcript
