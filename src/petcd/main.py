"""`petcd`: the member process. Flags as etcd's, then serve until SIGTERM/SIGINT.

This module wires the layers together (config → EtcdServer → API services → front ends), so it
sits above all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import ssl
import sys
import time
import urllib.parse
from typing import Any

import click

from petcd import ETCD_API_VERSION, __version__, errors
from petcd.api.grpc_frontend import build_server
from petcd.api.services import all_methods
from petcd.server.config import FLAGS, ConfigError, ServerConfig, resolve
from petcd.server.etcdserver import EtcdServer

log = logging.getLogger("petcd")

_STANDARD_RECORD_KEYS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, like etcd's zap logger: level, ts, logger, msg, fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "level": record.levelname.lower(),
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_RECORD_KEYS:
                line[key] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup_logging(config: ServerConfig) -> None:
    outputs = str(config.log_outputs)
    if outputs in ("default", "stderr"):
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
    elif outputs == "stdout":
        handler = logging.StreamHandler(sys.stdout)
    else:
        handler = logging.FileHandler(outputs)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = {"debug": logging.DEBUG, "warn": logging.WARNING, "error": logging.ERROR}
    root.setLevel(level.get(str(config.log_level), logging.INFO))


def grpc_address(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme in ("unix", "unixs"):
        return f"unix:{parsed.netloc}{parsed.path}"
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or 2379
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}"


class _Frontend:
    """Whichever gRPC front end serves the client URLs: started, then stopped with a grace."""

    def __init__(self, stop: Any, name: str) -> None:
        self.stop = stop
        self.name = name


@dataclasses.dataclass(slots=True)
class ClientTLS:
    """The client port's TLS files (--cert-file, --key-file, --client-cert-auth + CA)."""

    cert_file: str
    key_file: str
    trusted_ca_file: str
    client_cert_auth: bool

    def ssl_context(self) -> ssl.SSLContext:
        """For the native front end: Python's ssl (asyncio does the TLS)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        if self.client_cert_auth:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.trusted_ca_file)
        return context

    def grpc_credentials(self) -> Any:
        import grpc

        with open(self.key_file, "rb") as key, open(self.cert_file, "rb") as cert:
            pair = (key.read(), cert.read())
        roots = None
        if self.client_cert_auth:
            with open(self.trusted_ca_file, "rb") as ca:
                roots = ca.read()
        return grpc.ssl_server_credentials(
            [pair], root_certificates=roots, require_client_auth=self.client_cert_auth
        )


def client_tls(config: ServerConfig) -> ClientTLS | None:
    """The TLS settings when any client URL is https/unixs (a ConfigError if incomplete)."""
    schemes = {urllib.parse.urlsplit(url).scheme for url in config.listen_client_urls}
    if not schemes & {"https", "unixs"}:
        return None
    if not config.cert_file or not config.key_file:
        raise ConfigError("https client URLs need --cert-file and --key-file")
    if config.client_cert_auth and not config.trusted_ca_file:
        raise ConfigError("--client-cert-auth needs --trusted-ca-file")
    return ClientTLS(
        str(config.cert_file),
        str(config.key_file),
        str(config.trusted_ca_file),
        bool(config.client_cert_auth),
    )


async def start_frontend(config: ServerConfig, server: EtcdServer) -> _Frontend:
    """The native front end (libnghttp2) when asked and importable, else grpcio."""
    methods = all_methods(server)
    max_request_bytes = int(config.max_request_bytes)
    max_streams = int(config.max_concurrent_streams)
    tls = client_tls(config)
    addresses: list[tuple[str, str, ClientTLS | None]] = []
    for url in config.listen_client_urls:
        is_tls = urllib.parse.urlsplit(url).scheme in ("https", "unixs")
        addresses.append((url, grpc_address(url), tls if is_tls else None))
    if str(config.grpc_frontend) == "native":
        try:
            from petcd.api.native.server import NativeServer
        except ImportError as exc:
            log.warning(
                "native gRPC front end unavailable, using grpcio", extra={"error": str(exc)}
            )
        else:
            native = NativeServer(
                methods,
                max_request_bytes,
                max_streams,
                keepalive_interval_s=float(config.grpc_keepalive_interval),
                keepalive_timeout_s=float(config.grpc_keepalive_timeout),
            )
            for url, address, secure in addresses:
                try:
                    await native.listen(address, secure.ssl_context() if secure else None)
                except OSError as exc:
                    await native.stop(0)
                    raise ConfigError(f"cannot listen on {url}: {exc}") from exc
            return _Frontend(native.stop, "native")
    grpc_server = build_server(methods, max_request_bytes, max_streams)
    for url, address, secure in addresses:
        if secure is not None:
            bound = grpc_server.add_secure_port(address, secure.grpc_credentials())
        else:
            bound = grpc_server.add_insecure_port(address)
        if bound == 0:
            raise ConfigError(f"cannot listen on {url}")
    await grpc_server.start()
    return _Frontend(grpc_server.stop, "grpcio")


async def serve(config: ServerConfig) -> int:
    server = EtcdServer(config)
    await server.start()
    try:
        frontend = await start_frontend(config, server)
    except ConfigError:
        await server.stop()
        raise
    server.publish_attributes(str(config.name), list(config.advertise_client_urls))
    log.info(
        "ready to serve client requests",
        extra={
            "listen_client_urls": list(config.listen_client_urls),
            "grpc_frontend": frontend.name,
        },
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    stopped = asyncio.create_task(server.stopped.wait())
    asked = asyncio.create_task(stop.wait())
    await asyncio.wait({stopped, asked}, return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down")
    await frontend.stop(1.0)
    await server.stop()
    for task in (stopped, asked):
        task.cancel()
    return 1 if server.failed else 0


def _click_options(func: Any) -> Any:
    for flag in reversed(FLAGS):
        is_bool = isinstance(flag.default, bool)
        func = click.option(
            f"--{flag.name}",
            flag.name.replace("-", "_"),
            type=str,
            default=None,
            is_flag=False,
            flag_value="true" if is_bool else None,
            help=flag.help,
        )(func)
    return func


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config-file", "config_file", default=None, help="Path to the YAML config file.")
@click.option("--version", "show_version", is_flag=True, help="Print the version and exit.")
@_click_options
def main(config_file: str | None, show_version: bool, **given: str | None) -> None:
    """petcd: a distributed, reliable key-value store speaking the etcd v3 API."""
    if show_version:
        click.echo(f"petcd Version: {__version__}")
        click.echo(f"etcd API Version: {ETCD_API_VERSION[:3]}")
        click.echo(f"Python Version: {sys.version.split()[0]}")
        return
    command_line = {
        name.replace("_", "-"): value for name, value in given.items() if value is not None
    }
    try:
        config = resolve(command_line, config_file=config_file)
    except ConfigError as exc:
        click.echo(f"petcd: {exc}", err=True)
        sys.exit(1)
    setup_logging(config)
    loop_factory = None
    if os.environ.get("PETCD_EVENT_LOOP", "uvloop") == "uvloop":
        with contextlib.suppress(ImportError):
            import uvloop

            loop_factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            sys.exit(runner.run(serve(config)))
    except ConfigError as exc:
        log.error(str(exc))
        sys.exit(1)
    except errors.StorageError as exc:
        log.error("cannot start: %s", exc.message)
        sys.exit(1)
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            sys.exit(130)
