"""Leases: grant/revoke/renew/expiry/checkpoint and the keys attached to them."""

from petcd.lease.lessor import FOREVER, MAX_LEASE_TTL_S, Lease, Lessor, min_lease_ttl_s

__all__ = ["FOREVER", "MAX_LEASE_TTL_S", "Lease", "Lessor", "min_lease_ttl_s"]
