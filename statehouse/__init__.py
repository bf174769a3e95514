"""Statehouse: transactional, versioned, durable state for AI agents.

```python
from statehouse import Statehouse

with Statehouse() as client:  # $STATEHOUSE_ADDR, else localhost:50051
    with client.begin_transaction() as tx:
        tx.write("agent-1", "memory", {"facts": ["sky is blue"], "n": 42})
    print(client.get_state("agent-1", "memory").value)
```

`AsyncStatehouse` has the same methods as coroutines, for asyncio code.
"""

from statehouse import _fork  # noqa: F401 -- first: sets GRPC_ENABLE_FORK_SUPPORT before grpc
from statehouse._retry import RetryPolicy
from statehouse._watch import AsyncWatch, Watch
from statehouse.async_client import AsyncStatehouse, AsyncTransaction
from statehouse.client import Statehouse, Transaction
from statehouse.exceptions import (
    ConflictError,
    DataLossError,
    DeadlineExceededError,
    ForkedProcessError,
    HistoryCompactedError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    StatehouseError,
    TransactionClosedError,
    TransactionDataLossError,
    TransactionDeadlineExceededError,
    TransactionError,
    TransactionExpiredError,
    TransactionInvalidArgumentError,
    TransactionNotFoundError,
    TransactionResourceExhaustedError,
    TransactionUnavailableError,
    UnavailableError,
)
from statehouse.types import (
    AgentState,
    KeyVersion,
    Operation,
    Page,
    ReplayEvent,
    SnapshotInfo,
    StateResult,
    StateSet,
)

__version__ = "0.5.0"

__all__ = [
    "AgentState",
    "AsyncStatehouse",
    "AsyncTransaction",
    "AsyncWatch",
    "ConflictError",
    "DataLossError",
    "DeadlineExceededError",
    "ForkedProcessError",
    "HistoryCompactedError",
    "InvalidArgumentError",
    "KeyVersion",
    "NotFoundError",
    "Operation",
    "Page",
    "ReplayEvent",
    "ResourceExhaustedError",
    "RetryPolicy",
    "SnapshotInfo",
    "StateResult",
    "StateSet",
    "StatehouseError",
    "Statehouse",
    "Transaction",
    "TransactionClosedError",
    "TransactionDataLossError",
    "TransactionDeadlineExceededError",
    "TransactionError",
    "TransactionExpiredError",
    "TransactionInvalidArgumentError",
    "TransactionNotFoundError",
    "TransactionResourceExhaustedError",
    "TransactionUnavailableError",
    "UnavailableError",
    "Watch",
    "__version__",
]
