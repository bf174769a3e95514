"""Domain errors raised by the actors; rpc/status.py maps each to a gRPC code.

StatehouseFault
├── InvalidArgument         bad name, value, timeout or version
├── TransactionNotFound     unknown transaction id
├── TransactionExpired      its timeout passed before commit
├── TransactionClosed       already committed or aborted
├── VersionNotFound         the key never had that version
├── DeadlineExceeded        an actor did not answer within the request deadline
└── Unavailable             shutting down, or storage failed
"""

from __future__ import annotations


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


class Retired(Exception):
    """Internal: the namespace actor retired; the caller asks the registry again."""
