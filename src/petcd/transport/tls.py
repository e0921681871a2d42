"""TLS for peer connections: `TransportTLS` builds the server and client `ssl.SSLContext`s.

Mirrors etcd's peer TLS flags (etcd-api-facts.md §6.2): `--peer-cert-file`, `--peer-key-file`,
`--peer-trusted-ca-file`, `--peer-client-cert-auth`, `--peer-client-cert-file/-key-file`
(the certificate presented when dialling; defaults to the server one, as etcd),
`--peer-cert-allowed-cn`, `--tls-min-version`.

Verification is on whenever a trusted CA is given: a dialling member checks the listener's
certificate chain and (by default) that the certificate names the host in the peer URL; with
`client_cert_auth` the listener demands a client certificate from the same CA. A certificate
from another CA fails the TLS handshake, so the connection never reaches the frame layer.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

from petcd.errors import TransportConfigError

_TLS_VERSIONS = {
    "TLS1.2": ssl.TLSVersion.TLSv1_2,
    "TLS1.3": ssl.TLSVersion.TLSv1_3,
}


@dataclass(slots=True)
class TransportTLS:
    cert_file: str
    key_file: str
    trusted_ca_file: str = ""
    client_cert_auth: bool = False
    client_cert_file: str = ""
    client_key_file: str = ""
    #: Only accept client certificates whose subject common name is this (etcd's allowed-cn).
    allowed_cn: str = ""
    #: Check that the listener's certificate names the host of the URL we dial.
    verify_hostname: bool = True
    min_version: str = "TLS1.2"

    def validate(self) -> None:
        for name in ("cert_file", "key_file", "trusted_ca_file"):
            path = getattr(self, name)
            if name != "trusted_ca_file" and not path:
                raise TransportConfigError(f"TLS needs {name}")
            if path and not os.path.isfile(path):
                raise TransportConfigError(f"TLS {name} {path!r} does not exist")
        if self.client_cert_auth and not self.trusted_ca_file:
            raise TransportConfigError("client_cert_auth needs trusted_ca_file")
        if bool(self.client_cert_file) != bool(self.client_key_file):
            raise TransportConfigError("client_cert_file and client_key_file go together")
        if self.min_version not in _TLS_VERSIONS:
            raise TransportConfigError(f"unknown TLS version {self.min_version!r}")

    def server_context(self) -> ssl.SSLContext:
        """The context a listener uses; demands client certificates when client_cert_auth."""
        self.validate()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = _TLS_VERSIONS[self.min_version]
        self._load_chain(ctx, self.cert_file, self.key_file)
        if self.trusted_ca_file:
            ctx.load_verify_locations(cafile=self.trusted_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED if self.client_cert_auth else ssl.CERT_NONE
        assert not ctx.check_hostname
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """The context a dialling member uses: verifies the listener against the trusted CA."""
        self.validate()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = _TLS_VERSIONS[self.min_version]
        if self.trusted_ca_file:
            ctx.load_verify_locations(cafile=self.trusted_ca_file)
            ctx.check_hostname = self.verify_hostname
            ctx.verify_mode = ssl.CERT_REQUIRED
        else:
            # No CA given: encrypted but unverified, as etcd without --peer-trusted-ca-file.
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        cert = self.client_cert_file or self.cert_file
        key = self.client_key_file or self.key_file
        self._load_chain(ctx, cert, key)
        return ctx

    @staticmethod
    def _load_chain(ctx: ssl.SSLContext, cert_file: str, key_file: str) -> None:
        try:
            ctx.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise TransportConfigError(f"cannot load {cert_file} / {key_file}: {exc}") from None

    def common_name_allowed(self, peer_cert: dict[str, object] | None) -> bool:
        """Whether a verified client certificate passes the allowed_cn check."""
        if not self.allowed_cn:
            return True
        if not peer_cert:
            return False
        subject = peer_cert.get("subject", ())
        assert isinstance(subject, tuple)
        for rdn in subject:
            for key, value in rdn:
                if key == "commonName" and value == self.allowed_cn:
                    return True
        return False
