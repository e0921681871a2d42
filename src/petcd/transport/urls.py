"""Peer URLs: `http://host:port` (plain TCP) or `https://host:port` (TLS), as etcd's peer flags.

Validated once here, at the gate (add_peer, update_peer, start, call by URL); everything after
works with a `PeerURL` and trusts it.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from petcd.errors import TransportConfigError

SCHEMES = ("http", "https")


@dataclass(slots=True, frozen=True)
class PeerURL:
    scheme: str
    host: str
    port: int

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_url(url: str, *, listen: bool = False) -> PeerURL:
    """Parse and check one peer URL; port 0 is allowed only for listening (any free port)."""
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme not in SCHEMES:
        raise TransportConfigError(f"peer URL {url!r}: scheme must be http or https")
    if parsed.path not in ("", "/") or parsed.query or parsed.fragment:
        raise TransportConfigError(f"peer URL {url!r}: must be scheme://host:port only")
    try:
        port = parsed.port
    except ValueError as exc:
        raise TransportConfigError(f"peer URL {url!r}: {exc}") from None
    host = parsed.hostname
    if not host or port is None:
        raise TransportConfigError(f"peer URL {url!r}: needs a host and a port")
    if port == 0 and not listen:
        raise TransportConfigError(f"peer URL {url!r}: port 0 only makes sense for listening")
    result = PeerURL(parsed.scheme, host, port)
    assert 0 <= result.port <= 65535
    return result


def parse_urls(urls: list[str] | tuple[str, ...]) -> tuple[PeerURL, ...]:
    if isinstance(urls, str):
        raise TransportConfigError(f"peer URLs must be a list, got the string {urls!r}")
    if not urls:
        raise TransportConfigError("a peer needs at least one URL")
    parsed = tuple(parse_url(u) for u in urls)
    assert len(parsed) == len(urls)
    return parsed
