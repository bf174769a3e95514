"""Pykka actors: one per namespace owning open transactions, and the ledger,
the sole writer. `ActorSystem` is the facade the rpc layer talks to."""

from actors.errors import (
    AlreadyCommitted,
    Conflict,
    DeadlineExceeded,
    InvalidArgument,
    NotRepresentable,
    ResourceExhausted,
    StatehouseFault,
    TransactionClosed,
    TransactionExpired,
    TransactionNotFound,
    Unavailable,
    VersionNotFound,
)
from actors.messages import Condition, Mutation, TxnOpen
from actors.metrics import Metrics
from actors.namespace import new_client_txn_namespace
from actors.reply import Reply
from actors.system import ActorConfig, ActorSystem, Asked, CommitRequest, SnapshotPolicy
from actors.watch import Watcher, WatchFilter

__all__ = [
    "AlreadyCommitted",
    "ActorConfig",
    "ActorSystem",
    "Asked",
    "CommitRequest",
    "Condition",
    "Conflict",
    "DeadlineExceeded",
    "InvalidArgument",
    "Metrics",
    "Mutation",
    "NotRepresentable",
    "Reply",
    "ResourceExhausted",
    "SnapshotPolicy",
    "StatehouseFault",
    "TransactionClosed",
    "TransactionExpired",
    "TransactionNotFound",
    "TxnOpen",
    "Unavailable",
    "VersionNotFound",
    "WatchFilter",
    "Watcher",
    "new_client_txn_namespace",
]
