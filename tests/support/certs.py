"""Throw-away certificates for TLS tests: a CA, a server certificate for 127.0.0.1/localhost
and a client certificate, written as PEM files (cryptography; nothing leaves the test)."""

from __future__ import annotations

import datetime
import ipaddress
import pathlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.process import TLSFiles


@dataclass(slots=True, frozen=True)
class CertSet:
    server: TLSFiles  # server TLS only: clients verify the server
    mutual: TLSFiles  # the server also demands a client certificate from our CA
    ca_file: str
    client_cert_file: str
    client_key_file: str


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: pathlib.Path) -> str:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    return str(path)


def _write_cert(cert: x509.Certificate, path: pathlib.Path) -> str:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    usages: list[x509.ObjectIdentifier],
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(san, critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def make_certs(directory: pathlib.Path) -> CertSet:
    """A CA plus server and client certificates under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("petcd test CA"))
        .issuer_name(_name("petcd test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = _write_cert(ca_cert, directory / "ca.pem")
    server_key = ec.generate_private_key(ec.SECP256R1())
    # etcd's own gateway dials the server with the server certificate: it needs both usages
    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    server_cert = _issue("server", server_key, ca_key, ca_cert.subject, both)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_usage = [ExtendedKeyUsageOID.CLIENT_AUTH]
    client_cert = _issue("client", client_key, ca_key, ca_cert.subject, client_usage)
    server = TLSFiles(
        cert_file=_write_cert(server_cert, directory / "server.pem"),
        key_file=_write_key(server_key, directory / "server-key.pem"),
        ca_file=ca_file,
    )
    client_cert_file = _write_cert(client_cert, directory / "client.pem")
    client_key_file = _write_key(client_key, directory / "client-key.pem")
    mutual = TLSFiles(
        server.cert_file,
        server.key_file,
        ca_file,
        client_cert_auth=True,
        client_cert_file=client_cert_file,
        client_key_file=client_key_file,
    )
    return CertSet(server, mutual, ca_file, client_cert_file, client_key_file)
