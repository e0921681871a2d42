"""Snapshot streams of the backend, in etcd's Maintenance.Snapshot shape.

A snapshot is a consistent copy of the backend file (Backend.copy_to, made in a worker thread
while the member serves), sent as chunks of 32 KiB with the bytes remaining after each, then
one last chunk holding the SHA-256 of everything before it (remaining 0). etcdctl writes all
of it, trailer included, to its file; `strip_trailer` recognises such a file by its size
(a multiple of 512 plus 32; LMDB files are whole pages), checks the digest and cuts it off so
that the file can be given to `WatchableStore.restore`.

Invariant: the chunks' bytes, in order, are exactly the copied file followed by its digest.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

from petcd import errors

CHUNK_BYTES = 32 * 1024
DIGEST_BYTES = 32


def chunks(path: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[bytes, int]]:
    """(blob, remaining_bytes) for each chunk of the file, then (sha256 digest, 0)."""
    assert chunk_bytes > 0
    size = os.stat(path).st_size
    digest = hashlib.sha256()
    sent = 0
    with open(path, "rb") as f:
        while sent < size:
            blob = f.read(min(chunk_bytes, size - sent))
            if not blob:
                raise errors.CorruptFileError(path, sent, "file shrank while streaming")
            sent += len(blob)
            digest.update(blob)
            yield blob, size - sent
    assert sent == size
    yield digest.digest(), 0


def strip_trailer(path: str) -> bool:
    """Check and remove a SHA-256 trailer (etcdctl snapshot files); False if there is none."""
    size = os.stat(path).st_size
    if size % 512 != DIGEST_BYTES:
        return False
    body = size - DIGEST_BYTES
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        left = body
        while left:
            blob = f.read(min(1 << 20, left))
            assert blob, "file shrank while reading"
            digest.update(blob)
            left -= len(blob)
        trailer = f.read(DIGEST_BYTES)
    if digest.digest() != trailer:
        raise errors.CorruptFileError(path, body, "snapshot SHA-256 does not match its trailer")
    with open(path, "r+b") as f:
        f.truncate(body)
        f.flush()
        os.fsync(f.fileno())
    return True
