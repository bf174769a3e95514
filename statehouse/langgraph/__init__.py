"""LangGraph on Statehouse: a checkpointer and a store (`pip install "statehouse[langgraph]"`).

    from statehouse import Statehouse
    from statehouse.langgraph import StatehouseSaver, StatehouseStore

    client = Statehouse("localhost:50051")
    graph = builder.compile(checkpointer=StatehouseSaver(client), store=StatehouseStore(client))

See docs/langgraph.md for the layout, the guarantees and what is not supported.
"""

from __future__ import annotations

try:
    import langgraph.checkpoint.base  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError('statehouse.langgraph needs LangGraph: pip install "statehouse[langgraph]"') from exc

from statehouse.langgraph.checkpoint import AsyncStatehouseSaver, StatehouseSaver, interrupted
from statehouse.langgraph.store import AsyncStatehouseStore, StatehouseStore

__all__ = [
    "AsyncStatehouseSaver",
    "AsyncStatehouseStore",
    "StatehouseSaver",
    "StatehouseStore",
    "interrupted",
]
