"""TLS stays Python's: the native front end over an asyncio SSL transport, ALPN h2."""

from __future__ import annotations

import asyncio
import pathlib
import ssl

import grpc

from petcd.pb import rpc_pb2
from tests.native.conftest import SERVICE, Running
from tests.support.certs import make_certs


def test_unary_call_over_tls(native: Running, tmp_path: pathlib.Path) -> None:
    certs = make_certs(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.server.cert_file, certs.server.key_file)
    port = asyncio.run_coroutine_threadsafe(
        native.server.listen("127.0.0.1:0", tls=context), native.loop
    ).result(10)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pathlib.Path(certs.ca_file).read_bytes()
    )
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        echo = channel.unary_unary(
            f"/{SERVICE}/Echo",
            request_serializer=rpc_pb2.RangeRequest.SerializeToString,
            response_deserializer=rpc_pb2.RangeResponse.FromString,
        )
        reply = echo(rpc_pb2.RangeRequest(key=b"secret"), timeout=10)
    assert reply.kvs[0].key == b"secret"
