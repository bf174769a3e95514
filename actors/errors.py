"""Domain errors raised by the actors; rpc/status.py maps each to a gRPC code.

StatehouseFault
├── InvalidArgument         bad name, value, timeout or version
├── TransactionNotFound     unknown transaction id
├── TransactionExpired      its timeout passed before commit
├── TransactionClosed       already committed or aborted
│   └── AlreadyCommitted    an id opened again whose transaction committed (carries its commit_ts)
├── VersionNotFound         the key never had that version
├── NotRepresentable        a value the reader cannot receive in the form it asked for
├── ResourceExhausted       past a configured limit (open transactions, operations, bytes)
├── Conflict                a condition of a conditional commit did not hold
├── DeadlineExceeded        an actor did not answer within the request deadline
└── Unavailable             shutting down, or storage failed
    └── OutcomeUnknown      a commit may or may not have been written
"""

from __future__ import annotations

from typing import Any


class StatehouseFault(Exception):
    """Base of every error the daemon reports to a client on purpose."""


class InvalidArgument(StatehouseFault):
    pass


class TransactionNotFound(StatehouseFault):
    pass


class TransactionExpired(StatehouseFault):
    pass


class TransactionClosed(StatehouseFault):
    pass


class AlreadyCommitted(TransactionClosed):
    """A chunk sent ahead tried to open a transaction id that already committed."""

    def __init__(self, message: str, commit_ts: int) -> None:
        super().__init__(message)
        self.commit_ts = commit_ts


class VersionNotFound(StatehouseFault):
    pass


class NotRepresentable(StatehouseFault):
    pass


class ResourceExhausted(StatehouseFault):
    pass


class DeadlineExceeded(StatehouseFault):
    pass


class Unavailable(StatehouseFault):
    pass


class OutcomeUnknown(Unavailable):
    """The commit was written but its fsync failed: it may or may not be durable."""


class Conflict(StatehouseFault):
    """A condition of a transaction did not hold when it committed; nothing was written."""

    def __init__(
        self,
        namespace: str,
        agent_id: str,
        key: str,
        expected_version: int,
        actual_version: int,
        exists: bool,
    ) -> None:
        self.namespace = namespace
        self.agent_id = agent_id
        self.key = key
        self.expected_version = expected_version
        self.actual_version = actual_version
        self.exists = exists
        expected = "no live value" if expected_version == 0 else f"version {expected_version}"
        if actual_version == 0:
            actual = "it was never written"
        elif exists:
            actual = f"it is at version {actual_version}"
        else:
            actual = f"it is at version {actual_version}, a delete"
        super().__init__(
            f"conflict on key {key!r} of agent {agent_id!r} in namespace {namespace!r}: "
            f"expected {expected}, but {actual}; nothing was committed"
        )

    def fields(self) -> dict[str, Any]:
        """The conflict by field, as the wire's `Conflict` message and the `txn.conflict`
        log line name them."""
        return {
            "namespace": self.namespace,
            "agent_id": self.agent_id,
            "key": self.key,
            "expected_version": self.expected_version,
            "actual_version": self.actual_version,
            "exists": self.exists,
        }


class Retired(Exception):
    """Internal: the namespace actor retired; the caller asks the registry again."""
