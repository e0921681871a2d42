"""`petcdutl`: offline tools for petcd data (etcdutl's commands for petcd's formats)."""

from __future__ import annotations

import json
import sys

import click

from petcd import ETCD_API_VERSION, __version__, errors
from petcd.utl import snapshot


def _parse_cluster(text: str) -> dict[str, list[str]]:
    members: dict[str, list[str]] = {}
    for part in text.split(","):
        name, sep, url = part.strip().partition("=")
        if not sep or not name or not url:
            raise click.BadParameter(f"invalid --initial-cluster entry {part!r}")
        members.setdefault(name, []).append(url)
    return members


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """petcdutl: offline utilities for petcd data directories and snapshots."""


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(f"petcdutl version: {__version__}")
    click.echo(f"API version: {ETCD_API_VERSION[:3]}")


@main.group("snapshot")
def snapshot_group() -> None:
    """Inspect and restore snapshot files."""


@snapshot_group.command("status")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("-w", "--write-out", default="simple", help="simple, table or json")
def snapshot_status(path: str, write_out: str) -> None:
    """Print the hash, revision, key count and size of a snapshot file."""
    try:
        st = snapshot.status(path)
    except errors.PetcdError as exc:
        click.echo(f"Error: {exc.message}", err=True)
        sys.exit(1)
    if write_out == "json":
        click.echo(
            json.dumps(
                {
                    "hash": st.hash,
                    "revision": st.revision,
                    "totalKey": st.total_keys,
                    "totalSize": st.total_size,
                },
                separators=(",", ":"),
            )
        )
    elif write_out == "table":
        click.echo("+----------+----------+------------+------------+")
        click.echo("|   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |")
        click.echo("+----------+----------+------------+------------+")
        click.echo(
            f"| {st.hash:08x} | {st.revision:8d} | {st.total_keys:10d} | {st.total_size:10d} |"
        )
        click.echo("+----------+----------+------------+------------+")
    else:
        click.echo(f"{st.hash:x}, {st.revision}, {st.total_keys}, {st.total_size}")


@snapshot_group.command("restore")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", default="default", help="Human-readable name for this member.")
@click.option("--data-dir", default="", help="Path to the data directory (default <name>.petcd).")
@click.option(
    "--initial-cluster",
    default="",
    help="Initial cluster configuration for restore bootstrap.",
)
@click.option("--initial-cluster-token", default="etcd-cluster", help="Initial cluster token.")
@click.option(
    "--initial-advertise-peer-urls",
    default="http://localhost:2380",
    help="This member's peer URLs.",
)
@click.option("--skip-hash-check", is_flag=True, help="Ignore the snapshot's SHA-256 trailer.")
def snapshot_restore(
    path: str,
    name: str,
    data_dir: str,
    initial_cluster: str,
    initial_cluster_token: str,
    initial_advertise_peer_urls: str,
    skip_hash_check: bool,
) -> None:
    """Restore a member's data directory from a snapshot file."""
    cluster = (
        _parse_cluster(initial_cluster)
        if initial_cluster
        else {name: [u for u in initial_advertise_peer_urls.split(",") if u]}
    )
    target = data_dir or f"{name}.petcd"
    try:
        member, cluster_id = snapshot.restore(
            path, target, name, cluster, initial_cluster_token, skip_hash_check
        )
    except errors.PetcdError as exc:
        click.echo(f"Error: {exc.message}", err=True)
        sys.exit(1)
    click.echo(
        f"restored snapshot to {target} (member {member:x}, cluster {cluster_id:x})", err=True
    )
