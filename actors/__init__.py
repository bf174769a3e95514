"""Pykka actors: one per namespace owning open transactions, and the ledger,
the sole writer. `ActorSystem` is the facade the rpc layer talks to."""

from actors.errors import (
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
from actors.messages import Mutation
from actors.system import ActorConfig, ActorSystem, SnapshotPolicy

__all__ = [
    "ActorConfig",
    "ActorSystem",
    "DeadlineExceeded",
    "InvalidArgument",
    "Mutation",
    "NotRepresentable",
    "ResourceExhausted",
    "SnapshotPolicy",
    "StatehouseFault",
    "TransactionClosed",
    "TransactionExpired",
    "TransactionNotFound",
    "Unavailable",
    "VersionNotFound",
]
