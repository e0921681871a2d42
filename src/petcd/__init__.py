"""petcd: a distributed, strongly consistent key-value store, wire-compatible with etcd v3."""

__version__ = "0.1.0"
#: The etcd API version petcd implements (what `Status.version` and `/version` report).
ETCD_API_VERSION = "3.5.0"
