"""The daemon's Prometheus metrics: the counters and histograms the actors and
the rpc layer update as they work, in one registry per daemon.

Gauges that describe the present (open transactions, live actors, data
directory size) are not kept here: they are read from their owners when
`/metrics` is scraped (see `rpc/monitor.py`), so nothing on the commit path
updates them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

# Seconds: from a fraction of a millisecond (a commit sharing a group) to
# seconds (a disk in trouble).
_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
# Commits per synced write, up to the ledger's largest group (512).
_GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    """Counters and histograms of one daemon, registered in `self.registry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.commits = Counter(
            "statehouse_commits", "Transactions committed durably (each with its own commit_ts)", registry=r
        )
        self.conflicts = Counter(
            "statehouse_conflicts", "Commits refused because an expected version did not hold", registry=r
        )
        self.aborts = Counter("statehouse_aborts", "Transactions aborted by their client", registry=r)
        self.expiries = Counter(
            "statehouse_expiries", "Transactions discarded because their timeout passed", registry=r
        )
        self.errors = Counter(
            "statehouse_rpc_errors",
            "Requests (or commits of a CommitBatch) answered with an error, by gRPC status code",
            ["code"],
            registry=r,
        )
        self.commit_seconds = Histogram(
            "statehouse_commit_latency_seconds",
            "From a transaction's opening on the server to its commit being durable",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.fsync_seconds = Histogram(
            "statehouse_fsync_latency_seconds",
            "One synced write: a commit group's RocksDB write and the WAL fsync that makes it durable",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.group_size = Histogram(
            "statehouse_group_commit_size",
            "Commits made durable by one synced write",
            buckets=_GROUP_BUCKETS,
            registry=r,
        )
