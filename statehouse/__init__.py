"""Statehouse: transactional, versioned, durable state for AI agents.

```python
from statehouse import Statehouse

with Statehouse() as client:  # $STATEHOUSE_ADDR, else localhost:50051
    with client.begin_transaction() as tx:
        tx.write("agent-1", "memory", {"facts": ["sky is blue"], "n": 42})
    print(client.get_state("agent-1", "memory").value)
```
"""

from statehouse.client import Statehouse, Transaction
from statehouse.exceptions import (
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    StatehouseError,
    TransactionClosedError,
    TransactionError,
    TransactionExpiredError,
    TransactionNotFoundError,
    UnavailableError,
)
from statehouse.types import Operation, ReplayEvent, SnapshotInfo, StateResult

__version__ = "0.2.0"

__all__ = [
    "DeadlineExceededError",
    "InvalidArgumentError",
    "NotFoundError",
    "Operation",
    "ReplayEvent",
    "ResourceExhaustedError",
    "SnapshotInfo",
    "StateResult",
    "StatehouseError",
    "Statehouse",
    "Transaction",
    "TransactionClosedError",
    "TransactionError",
    "TransactionExpiredError",
    "TransactionNotFoundError",
    "UnavailableError",
    "__version__",
]
