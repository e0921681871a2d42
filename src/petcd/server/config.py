"""Server configuration: etcd's flag names, `ETCD_*`/`PETCD_*` variables and etcd's YAML file.

Resolution, as etcd 3.5 does it (etcd-api-facts.md §6.1), with one petcd addition:
- `--config-file FILE` (or `ETCD_CONFIG_FILE`/`PETCD_CONFIG_FILE`): a YAML mapping whose keys are
  flag names; when given, every other flag and variable is ignored.
- otherwise each flag comes from the command line, else from `PETCD_<FLAG>`, else from
  `ETCD_<FLAG>` (upper case, `-` → `_`; an empty value counts as unset), else its default.
- a flag given on the command line while its variable is also set is a fatal error, as in etcd
  ("conflicting environment variable ... is shadowed by corresponding command-line flag").

Every flag is declared once in FLAGS; `ServerConfig` holds the parsed values under the flag's
name with `-` → `_`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

GIB = 1024**3
DEFAULT_QUOTA_BYTES = 2 * GIB
MAX_ELECTION_TIMEOUT_MS = 50_000


class ConfigError(Exception):
    """A configuration the member must refuse to start with."""


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "t", "true", "yes", "on"):
        return True
    if lowered in ("0", "f", "false", "no", "off"):
        return False
    raise ValueError(f"invalid boolean {text!r}")


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNIT_S = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration_s(text: str) -> float:
    """A Go duration ("1h30m", "100ms", "0") in seconds."""
    text = text.strip()
    if text in ("0", ""):
        return 0.0
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            raise ValueError(f"invalid duration {text!r}")
        total += float(match.group(1)) * _DURATION_UNIT_S[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"invalid duration {text!r}")
    return total


def parse_urls(text: str) -> list[str]:
    urls = [u.strip() for u in text.split(",") if u.strip()]
    for url in urls:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https", "unix", "unixs") or not parsed.netloc:
            raise ValueError(f"invalid URL {url!r}")
    return urls


def _str(text: str) -> str:
    return text


@dataclasses.dataclass(frozen=True, slots=True)
class Flag:
    name: str
    default: Any
    parse: Callable[[str], Any]
    help: str


FLAGS: tuple[Flag, ...] = (
    # member
    Flag("name", "default", _str, "Human-readable name for this member."),
    Flag("data-dir", "", _str, "Path to the data directory (default: <name>.petcd)."),
    Flag("wal-dir", "", _str, "Path to a dedicated WAL directory (default: data-dir/member/wal)."),
    Flag("snapshot-count", 100_000, int, "Applied entries between raft snapshots."),
    Flag(
        "experimental-snapshot-catchup-entries",
        5000,
        int,
        "Entries kept after a snapshot for slow followers to catch up from.",
    ),
    Flag("heartbeat-interval", 100, int, "Time (ms) of a heartbeat interval."),
    Flag("election-timeout", 1000, int, "Time (ms) for an election to timeout."),
    Flag("initial-election-tick-advance", True, parse_bool, "Fast-forward election ticks."),
    Flag("listen-peer-urls", ["http://localhost:2380"], parse_urls, "URLs to listen on for peers."),
    Flag("listen-client-urls", ["http://localhost:2379"], parse_urls, "URLs for client traffic."),
    Flag("listen-client-http-urls", [], parse_urls, "URLs for HTTP (gateway, health, version)."),
    Flag("listen-metrics-urls", [], parse_urls, "URLs for /metrics and /health."),
    Flag("max-snapshots", 5, int, "Maximum snapshot files to retain (0 is unlimited)."),
    Flag("max-wals", 5, int, "Maximum WAL files to retain (0 is unlimited)."),
    Flag("quota-backend-bytes", 0, int, "Backend size limit (0: 2 GiB; negative: none)."),
    Flag("backend-batch-interval", "0", parse_duration_s, "Maximum time before a backend sync."),
    Flag("backend-batch-limit", 0, int, "Maximum operations before a backend sync."),
    Flag("max-txn-ops", 128, int, "Maximum operations per transaction branch."),
    Flag("max-request-bytes", 1_572_864, int, "Maximum client request size in bytes."),
    Flag("max-concurrent-streams", 4_294_967_295, int, "Maximum streams per connection."),
    Flag("grpc-keepalive-min-time", "5s", parse_duration_s, "Minimum client ping interval."),
    Flag("grpc-keepalive-interval", "2h", parse_duration_s, "Server-to-client ping interval."),
    Flag("grpc-keepalive-timeout", "20s", parse_duration_s, "Ping acknowledgement timeout."),
    Flag("unsafe-no-fsync", False, parse_bool, "Disable fsync (unsafe: data loss on crash)."),
    # clustering
    Flag("initial-advertise-peer-urls", ["http://localhost:2380"], parse_urls, "Peer URLs."),
    Flag("initial-cluster", "", _str, "Initial cluster configuration (name=url,...)."),
    Flag("initial-cluster-state", "new", _str, "Initial cluster state ('new' or 'existing')."),
    Flag("initial-cluster-token", "etcd-cluster", _str, "Initial cluster token."),
    Flag("advertise-client-urls", ["http://localhost:2379"], parse_urls, "Client URLs to tell."),
    Flag("strict-reconfig-check", True, parse_bool, "Reject unsafe reconfiguration requests."),
    Flag("pre-vote", True, parse_bool, "Enable raft pre-vote."),
    Flag("auto-compaction-mode", "periodic", _str, "'periodic' or 'revision'."),
    Flag("auto-compaction-retention", "0", _str, "Auto compaction retention (0 is off)."),
    Flag("force-new-cluster", False, parse_bool, "Force a new single-member cluster."),
    Flag(
        "auto-compaction-revision-interval",
        "5m",
        parse_duration_s,
        "petcd: how often revision-mode auto compaction runs (etcd: fixed 5m).",
    ),
    # security
    Flag("cert-file", "", _str, "Client server TLS certificate file."),
    Flag("key-file", "", _str, "Client server TLS key file."),
    Flag("client-cert-auth", False, parse_bool, "Verify client certificates."),
    Flag("trusted-ca-file", "", _str, "Client server TLS trusted CA file."),
    Flag("auto-tls", False, parse_bool, "Client TLS with generated certificates."),
    Flag("peer-cert-file", "", _str, "Peer server TLS certificate file."),
    Flag("peer-key-file", "", _str, "Peer server TLS key file."),
    Flag("peer-client-cert-auth", False, parse_bool, "Verify peer client certificates."),
    Flag("peer-trusted-ca-file", "", _str, "Peer TLS trusted CA file."),
    Flag("peer-auto-tls", False, parse_bool, "Peer TLS with generated certificates."),
    # logging
    Flag("logger", "zap", _str, "Logger ('zap': JSON lines)."),
    Flag("log-outputs", "default", _str, "'default' (stderr), 'stderr', 'stdout' or a file path."),
    Flag("log-level", "info", _str, "debug, info, warn, error."),
    # experimental and misc
    Flag(
        "experimental-watch-progress-notify-interval",
        "10m",
        parse_duration_s,
        "Interval of server-side watch progress notifications.",
    ),
    Flag("experimental-enable-lease-checkpoint", False, parse_bool, "Checkpoint lease TTLs."),
    Flag("experimental-corrupt-check-time", "0s", parse_duration_s, "Periodic corruption check."),
    Flag("experimental-compaction-batch-limit", 1000, int, "Revisions deleted per batch."),
    Flag("experimental-compaction-sleep-interval", "10ms", parse_duration_s, "Batch pause."),
    Flag("enable-v2", False, parse_bool, "Accepted for compatibility; the v2 API is not served."),
    Flag("enable-grpc-gateway", True, parse_bool, "Serve the HTTP/JSON gateway."),
    Flag("enable-pprof", False, parse_bool, "Accepted for compatibility; ignored."),
    Flag("metrics", "basic", _str, "'basic' or 'extensive'."),
    Flag("cors", "*", _str, "Comma-separated allowed CORS origins."),
    Flag("host-whitelist", "*", _str, "Comma-separated acceptable Host headers."),
    Flag("auth-token", "simple", _str, "Auth token type ('simple' or 'jwt,...')."),
    Flag("auth-token-ttl", 300, int, "Simple token TTL in seconds."),
    Flag("bcrypt-cost", 10, int, "bcrypt cost for password hashing."),
    Flag("grpc-frontend", "native", _str, "petcd: gRPC front end: native (libnghttp2) or grpcio."),
    Flag(
        "experimental-peer-fault-injection",
        False,
        parse_bool,
        "petcd: let tests partition this member through a peer RPC (never in production).",
    ),
    Flag(
        "experimental-lease-checkpoint-interval",
        "5m",
        parse_duration_s,
        "petcd: how often the leader checkpoints remaining lease TTLs (etcd: 5m).",
    ),
)

FLAGS_BY_NAME: dict[str, Flag] = {flag.name: flag for flag in FLAGS}


@dataclasses.dataclass(slots=True)
class ServerConfig:
    """Parsed configuration. Attribute names are flag names with `-` replaced by `_`."""

    values: dict[str, Any]

    def __getattr__(self, attr: str) -> Any:
        try:
            return self.values[attr]
        except KeyError:
            raise AttributeError(attr) from None

    @property
    def data_dir_path(self) -> str:
        return str(self.values["data_dir"] or f"{self.values['name']}.petcd")

    @property
    def quota_bytes(self) -> int:
        quota = int(self.values["quota_backend_bytes"])
        if quota == 0:
            return DEFAULT_QUOTA_BYTES
        return quota

    @property
    def election_ticks(self) -> int:
        return int(self.election_timeout) // int(self.heartbeat_interval)

    @property
    def request_timeout_s(self) -> float:
        """etcd: 5 s + 2 × election timeout."""
        return 5.0 + 2 * int(self.election_timeout) / 1000.0

    def initial_cluster_map(self) -> dict[str, list[str]]:
        """`--initial-cluster` as name -> peer URLs (default: this member's advertised URLs)."""
        text = str(self.initial_cluster)
        if not text:
            return {str(self.name): list(self.initial_advertise_peer_urls)}
        members: dict[str, list[str]] = {}
        for part in text.split(","):
            name, sep, url = part.strip().partition("=")
            if not sep or not name:
                raise ConfigError(f"invalid --initial-cluster entry {part!r}")
            members.setdefault(name, []).extend(parse_urls(url))
        return members


def _env_names(flag: str) -> tuple[str, str]:
    suffix = flag.upper().replace("-", "_")
    return f"PETCD_{suffix}", f"ETCD_{suffix}"


def _parse_value(flag: Flag, raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return flag.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"invalid value for --{flag.name}: {exc}") from None
    if flag.parse is parse_urls and isinstance(raw, list):
        return parse_urls(",".join(str(u) for u in raw))
    if flag.parse is parse_duration_s and isinstance(raw, int | float):
        # YAML durations given as numbers are nanoseconds in etcd's config file.
        return float(raw) / 1e9
    if flag.parse is parse_urls:
        return parse_urls(str(raw))
    return raw if not isinstance(flag.default, int) or isinstance(raw, bool) else int(raw)


def _defaults() -> dict[str, Any]:
    values: dict[str, Any] = {}
    for flag in FLAGS:
        default = flag.default
        values[flag.name] = _parse_value(flag, default) if isinstance(default, str) else default
    return values


_TLS_SECTIONS = {
    "client-transport-security": "",
    "peer-transport-security": "peer-",
}


def _from_yaml(path: str) -> dict[str, Any]:
    import yaml

    try:
        with open(path) as f:
            doc = yaml.safe_load(f) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid config file {path}: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"config file {path} is not a YAML mapping")
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if key in _TLS_SECTIONS and isinstance(value, dict):
            for sub, sub_value in value.items():
                flat[_TLS_SECTIONS[key] + str(sub)] = sub_value
        else:
            flat[str(key)] = value
    return flat


def resolve(
    command_line: Mapping[str, str],
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> ServerConfig:
    """Combine defaults, variables, the command line (or a config file) into a ServerConfig.

    `command_line` maps flag names to the raw strings given on the command line.
    """
    env = os.environ if environ is None else environ
    values = _defaults()
    if config_file is None:
        config_file = env.get("PETCD_CONFIG_FILE") or env.get("ETCD_CONFIG_FILE") or None
    if config_file:
        for key, raw in _from_yaml(config_file).items():
            flag = FLAGS_BY_NAME.get(key)
            if flag is None:
                continue  # etcd ignores keys it does not know
            values[key] = _parse_value(flag, raw)
    else:
        for flag in FLAGS:
            petcd_var, etcd_var = _env_names(flag.name)
            env_raw = env.get(petcd_var) or env.get(etcd_var)
            if flag.name in command_line:
                if env_raw:
                    var = petcd_var if env.get(petcd_var) else etcd_var
                    raise ConfigError(
                        f'conflicting environment variable "{var}" is shadowed by '
                        "corresponding command-line flag (either unset environment variable "
                        "or disable flag)"
                    )
                values[flag.name] = _parse_value(flag, command_line[flag.name])
            elif env_raw:
                values[flag.name] = _parse_value(flag, env_raw)
    config = ServerConfig({name.replace("-", "_"): value for name, value in values.items()})
    validate(config)
    return config


def validate(config: ServerConfig) -> None:
    heartbeat = int(config.heartbeat_interval)
    election = int(config.election_timeout)
    if heartbeat <= 0:
        raise ConfigError("--heartbeat-interval must be positive")
    if election < 5 * heartbeat:
        raise ConfigError(
            f"--election-timeout[{election}ms] should be at least as 5 times as "
            f"--heartbeat-interval[{heartbeat}ms]"
        )
    if election > MAX_ELECTION_TIMEOUT_MS:
        raise ConfigError(
            f"--election-timeout[{election}ms] is too long, and should be set less than 50000ms"
        )
    if config.initial_cluster_state not in ("new", "existing"):
        raise ConfigError(f"invalid --initial-cluster-state {config.initial_cluster_state!r}")
    if config.auto_compaction_mode not in ("periodic", "revision"):
        raise ConfigError(f"invalid --auto-compaction-mode {config.auto_compaction_mode!r}")
    if int(config.max_request_bytes) <= 0:
        raise ConfigError("--max-request-bytes must be positive")
    if int(config.max_txn_ops) <= 0:
        raise ConfigError("--max-txn-ops must be positive")
    if int(config.snapshot_count) <= 0:
        raise ConfigError("--snapshot-count must be positive")
    if config.grpc_frontend not in ("grpcio", "native"):
        raise ConfigError(f"invalid --grpc-frontend {config.grpc_frontend!r}")
    from petcd.server.compactor import parse_retention

    parse_retention(str(config.auto_compaction_mode), str(config.auto_compaction_retention))
    names = config.initial_cluster_map()
    if config.name not in names:
        raise ConfigError(
            f"couldn't find local name {config.name!r} in the initial cluster configuration"
        )
