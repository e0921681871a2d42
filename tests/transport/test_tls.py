"""TLS between peers: mutual verification works; a certificate from another CA is refused in
either direction; the CN filter; https needs TLS settings."""

from __future__ import annotations

import pathlib

import pytest

from petcd.errors import PeerUnreachableError, TransportConfigError
from petcd.transport import TransportLimits, TransportTLS
from tests.support.certs import CertSet, make_certs
from tests.transport.helpers import MemberFactory, connect, eventually, heartbeat

TLS_URL = "https://127.0.0.1:0"
LIMITS = TransportLimits(backoff_initial_s=0.01, backoff_max_s=0.05, connect_timeout_s=1.0)


def peer_tls(certs: CertSet, **kwargs: object) -> TransportTLS:
    # the "server" certificate carries both server and client usages: a member uses it both ways
    return TransportTLS(
        cert_file=certs.server.cert_file,
        key_file=certs.server.key_file,
        trusted_ca_file=certs.ca_file,
        client_cert_auth=True,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertSet:
    return make_certs(tmp_path_factory.mktemp("ca-one"))


@pytest.fixture(scope="module")
def other_certs(tmp_path_factory: pytest.TempPathFactory) -> CertSet:
    return make_certs(tmp_path_factory.mktemp("ca-two"))


async def _pong(payload: bytes) -> bytes:
    return b"pong"


async def test_mutual_tls_carries_messages_and_calls(
    members: MemberFactory, certs: CertSet
) -> None:
    a = await members(1, start=False, tls=peer_tls(certs))
    b = await members(2, start=False, tls=peer_tls(certs))
    await a.start(TLS_URL)
    await b.start(TLS_URL)
    assert b.url.startswith("https://127.0.0.1:")
    await connect(a, b)
    a.t.send([heartbeat(1, 2, term=i + 1) for i in range(100)])
    await b.wait(lambda: len(b.messages) == 100)
    b.t.register("ping", _pong)
    assert await a.t.call(2, "ping", timeout_s=2.0) == b"pong"


async def test_client_with_a_foreign_certificate_is_refused(
    members: MemberFactory, certs: CertSet, other_certs: CertSet
) -> None:
    server = await members(2, start=False, tls=peer_tls(certs))
    await server.start(TLS_URL)
    # trusts the server's CA, but presents a certificate from another CA
    intruder_tls = TransportTLS(
        cert_file=other_certs.server.cert_file,
        key_file=other_certs.server.key_file,
        trusted_ca_file=certs.ca_file,
    )
    intruder = await members(1, start=False, tls=intruder_tls, limits=LIMITS)
    await intruder.start(TLS_URL)
    server.t.register("ping", _pong)
    with pytest.raises(PeerUnreachableError):
        await intruder.t.call(server.url, "ping", timeout_s=2.0)
    intruder.t.add_peer(2, [server.url])
    await eventually(lambda: intruder.t.stats[2].dial_failures >= 2)
    assert intruder.t.active_since(2) is None
    assert server.messages == []


async def test_server_with_a_foreign_certificate_is_refused(
    members: MemberFactory, certs: CertSet, other_certs: CertSet
) -> None:
    impostor = await members(2, start=False, tls=peer_tls(other_certs))
    await impostor.start(TLS_URL)
    impostor.t.register("ping", _pong)
    a = await members(1, start=False, tls=peer_tls(certs), limits=LIMITS)
    await a.start(TLS_URL)
    with pytest.raises(PeerUnreachableError, match="certificate verify failed"):
        await a.t.call(impostor.url, "ping", timeout_s=2.0)


async def test_plain_client_cannot_talk_to_a_tls_listener(
    members: MemberFactory, certs: CertSet
) -> None:
    server = await members(2, start=False, tls=peer_tls(certs))
    await server.start(TLS_URL)
    server.t.register("ping", _pong)
    plain = await members(1)
    plain_url = server.url.replace("https://", "http://")
    with pytest.raises(PeerUnreachableError):
        await plain.t.call(plain_url, "ping", timeout_s=1.0)
    with pytest.raises(TransportConfigError, match="no TLS"):
        await plain.t.call(server.url, "ping", timeout_s=1.0)


async def test_allowed_common_name(members: MemberFactory, certs: CertSet) -> None:
    server = await members(2, start=False, tls=peer_tls(certs, allowed_cn="someone-else"))
    await server.start(TLS_URL)
    server.t.register("ping", _pong)
    a = await members(1, start=False, tls=peer_tls(certs), limits=LIMITS)
    await a.start(TLS_URL)
    with pytest.raises(PeerUnreachableError):
        await a.t.call(server.url, "ping", timeout_s=2.0)
    ok = await members(3, start=False, tls=peer_tls(certs, allowed_cn="server"))
    await ok.start(TLS_URL)
    ok.t.register("ping", _pong)
    assert await a.t.call(ok.url, "ping", timeout_s=2.0) == b"pong"


def test_tls_settings_are_checked(tmp_path: pathlib.Path, certs: CertSet) -> None:
    with pytest.raises(TransportConfigError, match="does not exist"):
        TransportTLS(str(tmp_path / "nope.pem"), certs.server.key_file).server_context()
    with pytest.raises(TransportConfigError, match="needs trusted_ca_file"):
        TransportTLS(
            certs.server.cert_file, certs.server.key_file, client_cert_auth=True
        ).validate()
    with pytest.raises(TransportConfigError, match="cannot load"):
        TransportTLS(certs.server.cert_file, certs.ca_file).server_context()
    ctx = peer_tls(certs).client_context()
    assert ctx.check_hostname and ctx.verify_mode.name == "CERT_REQUIRED"
