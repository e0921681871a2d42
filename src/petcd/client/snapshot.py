"""Checking a Maintenance.Snapshot stream as it is saved (sans-I/O, shared by both clients).

etcd streams the backend in blob chunks and ends with one more message whose blob is the
SHA-256 (32 bytes) of every byte before it. Like etcdctl we write all of it, trailer included,
to the file (restore tools detect the trailer by `size % 512 == 32`), and check the trailer.

The verifier holds back the last 32 bytes seen so far: whatever comes after them is data, so
they are hashed then; at the end, the held-back bytes must equal the digest. This works
whether the trailer arrives as its own message (etcd) or glued to the last chunk.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from petcd import errors

TRAILER_BYTES = 32


@dataclass(slots=True, frozen=True)
class SnapshotResult:
    """A saved snapshot: its path, total size (trailer included) and the verified digest."""

    path: str
    size_bytes: int
    sha256: str


class SnapshotVerifier:
    """Feed every blob in order, then `finish()`: raises SnapshotIntegrityError on a mismatch."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._tail = b""
        self.size_bytes = 0

    def feed(self, blob: bytes) -> None:
        self.size_bytes += len(blob)
        joined = self._tail + blob
        cut = max(0, len(joined) - TRAILER_BYTES)
        self._hash.update(joined[:cut])
        self._tail = joined[cut:]
        assert len(self._tail) <= TRAILER_BYTES

    def finish(self) -> str:
        """The hex digest of the data, once the trailer has matched it."""
        if self.size_bytes < TRAILER_BYTES:
            raise errors.SnapshotIntegrityError(
                f"petcd: snapshot stream ended after {self.size_bytes} bytes, before its SHA-256 trailer"
            )
        digest = self._hash.digest()
        if digest != self._tail:
            raise errors.SnapshotIntegrityError()
        assert len(digest) == TRAILER_BYTES
        return digest.hex()
