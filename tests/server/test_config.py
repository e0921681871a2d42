"""Configuration: etcd's flags, ETCD_*/PETCD_* variables and the YAML config file."""

from __future__ import annotations

import pathlib
import subprocess

import pytest

from petcd.client import Client
from petcd.server.config import ConfigError, parse_duration_s, resolve
from tests.support.petcd_process import PETCD_BIN, PetcdProcess
from tests.support.process import free_port


def test_defaults_are_etcds() -> None:
    config = resolve({}, environ={})
    assert config.name == "default"
    assert config.data_dir_path == "default.petcd"
    assert config.listen_client_urls == ["http://localhost:2379"]
    assert config.initial_cluster_map() == {"default": ["http://localhost:2380"]}
    assert config.quota_bytes == 2 * 1024**3
    assert config.max_request_bytes == 1_572_864
    assert config.max_txn_ops == 128
    assert config.election_ticks == 10
    assert config.request_timeout_s == 7.0
    assert config.pre_vote is True


def test_environment_and_precedence() -> None:
    env = {"ETCD_NAME": "from-etcd", "ETCD_SNAPSHOT_COUNT": "42", "PETCD_SNAPSHOT_COUNT": "43"}
    config = resolve({"initial-cluster": "from-etcd=http://localhost:2380"}, environ=env)
    assert config.name == "from-etcd"
    assert config.snapshot_count == 43  # PETCD_ wins over ETCD_
    assert resolve({}, environ={"ETCD_PRE_VOTE": "false"}).pre_vote is False
    assert resolve({}, environ={"ETCD_NAME": ""}).name == "default"  # empty = unset


def test_flag_shadowed_by_variable_is_fatal() -> None:
    with pytest.raises(ConfigError, match='conflicting environment variable "ETCD_NAME"'):
        resolve({"name": "a"}, environ={"ETCD_NAME": "b"})


def test_invalid_values_are_refused() -> None:
    with pytest.raises(ConfigError, match="at least as 5 times"):
        resolve({"election-timeout": "400"}, environ={})
    with pytest.raises(ConfigError, match="invalid --initial-cluster-state"):
        resolve({"initial-cluster-state": "maybe"}, environ={})
    with pytest.raises(ConfigError, match="local name"):
        resolve({"name": "x", "initial-cluster": "y=http://localhost:2380"}, environ={})
    # etcd: without --initial-cluster, the member's own name and peer URLs make the cluster.
    assert resolve({"name": "x"}, environ={}).initial_cluster_map() == {
        "x": ["http://localhost:2380"]
    }
    with pytest.raises(ConfigError, match="invalid value for --snapshot-count"):
        resolve({"snapshot-count": "many"}, environ={})
    with pytest.raises(ConfigError, match="auto-compaction-retention"):
        resolve({"auto-compaction-retention": "soon"}, environ={})


def test_config_file_wins_over_everything(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "etcd.yaml"
    path.write_text(
        "name: infra1\n"
        "data-dir: /var/lib/etcd\n"
        "initial-cluster: infra1=http://10.0.0.1:2380\n"
        "listen-client-urls: http://0.0.0.0:2379\n"
        "snapshot-count: 5000\n"
        "quota-backend-bytes: 8589934592\n"
        "pre-vote: false\n"
        "unknown-key: ignored\n"
        "client-transport-security:\n"
        "  cert-file: /etc/c.pem\n"
        "  client-cert-auth: true\n"
    )
    config = resolve({"name": "ignored"}, environ={"ETCD_NAME": "ignored"}, config_file=str(path))
    assert config.name == "infra1"
    assert config.data_dir == "/var/lib/etcd"
    assert config.snapshot_count == 5000
    assert config.quota_bytes == 8589934592
    assert config.pre_vote is False
    assert config.listen_client_urls == ["http://0.0.0.0:2379"]
    assert config.cert_file == "/etc/c.pem"
    assert config.client_cert_auth is True


def test_go_durations() -> None:
    assert parse_duration_s("100ms") == pytest.approx(0.1)
    assert parse_duration_s("1h30m") == 5400
    assert parse_duration_s("0") == 0
    with pytest.raises(ValueError):
        parse_duration_s("10 minutes")


def test_version_flag() -> None:
    out = subprocess.run([PETCD_BIN, "--version"], capture_output=True, text=True, check=True)
    assert "petcd Version: 0.1.0" in out.stdout
    assert "etcd API Version: 3.5" in out.stdout


@pytest.mark.integration
def test_member_configured_by_etcd_variables(tmp_path: pathlib.Path) -> None:
    port, peer = free_port(), free_port()
    env = {
        "ETCD_NAME": "envnamed",
        "ETCD_DATA_DIR": str(tmp_path / "envdata"),
        "ETCD_LISTEN_CLIENT_URLS": f"http://127.0.0.1:{port}",
        "ETCD_ADVERTISE_CLIENT_URLS": f"http://127.0.0.1:{port}",
        "ETCD_LISTEN_PEER_URLS": f"http://127.0.0.1:{peer}",
        "ETCD_INITIAL_ADVERTISE_PEER_URLS": f"http://127.0.0.1:{peer}",
        "ETCD_INITIAL_CLUSTER": f"envnamed=http://127.0.0.1:{peer}",
    }
    proc = subprocess.Popen([PETCD_BIN], env=env, stderr=subprocess.DEVNULL)
    try:
        from tests.support.process import wait_serving

        wait_serving(f"127.0.0.1:{port}", timeout=30, alive=lambda: proc.poll() is None)
        with Client([f"127.0.0.1:{port}"]) as client:
            names = [m.name for m in client.member_list().members]
        assert (tmp_path / "envdata" / "member" / "wal").is_dir()
        assert names == ["envnamed"]
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0  # SIGTERM is a clean shutdown


@pytest.mark.integration
def test_second_process_cannot_open_the_data_dir(tmp_path: pathlib.Path) -> None:
    with PetcdProcess(tmp_path / "locked") as member:
        port = free_port()
        out = subprocess.run(
            [
                PETCD_BIN,
                f"--data-dir={member.member_dir}",
                f"--listen-client-urls=http://127.0.0.1:{port}",
                f"--advertise-client-urls=http://127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode != 0
        assert "in use by another process" in out.stderr
