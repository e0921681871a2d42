"""petcd-benchmark: a load generator for any etcd v3 endpoint (see `petcd.benchmark.main`)."""
