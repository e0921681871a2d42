"""The petcd member: raft driver, apply loop, ReadIndex, leases, quotas and alarms, snapshots."""
