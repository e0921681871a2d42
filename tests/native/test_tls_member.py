"""A petcd member serving its client port over TLS, on either front end (etcd's TLS flags)."""

from __future__ import annotations

import pathlib

import grpc
import pytest

from petcd.pb import rpc_pb2, rpc_pb2_grpc
from tests.support.certs import make_certs
from tests.support.petcd_process import PetcdProcess


@pytest.mark.parametrize("frontend", ["native", "grpcio"])
@pytest.mark.parametrize("mutual", [False, True])
def test_member_serves_tls(tmp_path: pathlib.Path, frontend: str, mutual: bool) -> None:
    certs = make_certs(tmp_path / "certs")
    tls = certs.mutual if mutual else certs.server
    with PetcdProcess(
        tmp_path / "data", tls=tls, extra_args=["--grpc-frontend", frontend]
    ) as member:
        ca = pathlib.Path(certs.ca_file).read_bytes()
        key = pathlib.Path(certs.client_key_file).read_bytes() if mutual else None
        cert = pathlib.Path(certs.client_cert_file).read_bytes() if mutual else None
        credentials = grpc.ssl_channel_credentials(ca, key, cert)
        with grpc.secure_channel(member.endpoint, credentials) as channel:
            kv = rpc_pb2_grpc.KVStub(channel)  # type: ignore[no-untyped-call]
            kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v"), timeout=10)
            reply = kv.Range(rpc_pb2.RangeRequest(key=b"k"), timeout=10)
            assert reply.kvs[0].value == b"v"
        if mutual:  # without a client certificate the handshake is refused
            anonymous = grpc.ssl_channel_credentials(ca)
            with grpc.secure_channel(member.endpoint, anonymous) as channel:
                kv = rpc_pb2_grpc.KVStub(channel)  # type: ignore[no-untyped-call]
                with pytest.raises(grpc.RpcError) as info:
                    kv.Range(rpc_pb2.RangeRequest(key=b"k"), timeout=3)
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
