"""Cluster members, learners, peer URLs and the cluster id, stored in the backend."""

from petcd.membership.cluster import MAX_LEARNERS, RaftCluster

__all__ = ["MAX_LEARNERS", "RaftCluster"]
