"""LangGraph stores on Statehouse: `StatehouseStore` and `AsyncStatehouseStore`.

A store namespace (a tuple of labels) is an agent of one Statehouse
namespace ("langgraph-store" by default): its agent_id is the labels, each
escaped and closed by "/" (`("users", "42")` is `users/42/`), so a search
under a prefix of labels is a listing of agents by prefix. Each item is one
key of that agent (its key, escaped and closed by "/"), whose value is JSON
a person can read: `{"value": {...}, "created_at": "...", "updated_at": "..."}`.

A batch reads first (its gets as of one commit, then its searches and
listings), then writes: its puts in one transaction, then one purge per
item it deletes (a delete removes the item with its history). Values are
JSON (Statehouse's exact JSON: ints stay ints; a tuple comes back a list).
There is no vector index: an `index` config is refused, and a search's
`query` is ignored, as LangGraph's InMemoryStore does without one. Search
answers in the order of the escaped labels, then the escaped key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from langgraph.store.base import (
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
)

from statehouse import AsyncStatehouse, Statehouse
from statehouse.langgraph import _calls as calls
from statehouse.langgraph import _layout as layout
from statehouse.langgraph._calls import Plan
from statehouse.types import StateResult

DEFAULT_NAMESPACE = "langgraph-store"
AGENTS_PAGE = 256  # store namespaces read per call while searching or listing


def _agent(namespace: tuple[str, ...]) -> str:
    return layout.agent_id("store namespace", "".join(layout.part(label) for label in namespace))


def _namespace(agent_id: str) -> tuple[str, ...]:
    return tuple(layout.parts(agent_id))


def _item(namespace: tuple[str, ...], result: StateResult, kind: type[Item] = Item) -> Item:
    record = result.value
    return kind(
        value=record["value"],
        key=layout.parts(result.key or "")[0],
        namespace=namespace,
        created_at=datetime.fromisoformat(record["created_at"]),
        updated_at=datetime.fromisoformat(record["updated_at"]),
    )


class _StorePlans(BaseStore):
    """What both stores do, as plans (statehouse/langgraph/_calls.py)."""

    def __init__(self, *, namespace: str = DEFAULT_NAMESPACE, index: Any = None, ttl: Any = None) -> None:
        if index is not None:
            raise ValueError(
                "StatehouseStore has no vector index (semantic search): leave `index` unset; "
                "search filters on values, and a search's `query` is ignored"
            )
        if ttl is not None:
            raise ValueError(
                "StatehouseStore does not expire items (no TTL); delete them, or use the daemon's "
                "retention policy for old versions"
            )
        self.namespace = namespace

    def _batch(self, ops: Iterable[Op]) -> Plan[list[Result]]:
        ops = list(ops)
        results: list[Result] = [None] * len(ops)
        puts: dict[tuple[tuple[str, ...], str], PutOp] = {}
        gets: list[tuple[int, GetOp]] = []
        for n, op in enumerate(ops):
            if isinstance(op, GetOp):
                gets.append((n, op))
            elif isinstance(op, PutOp):
                puts[(op.namespace, op.key)] = op  # the last op of a key wins
            elif not isinstance(op, SearchOp | ListNamespacesOp):
                raise ValueError(f"unknown store operation: {op!r}")
        # Reads: the items the gets name and the puts replace, as of one commit.
        wanted = [(op.namespace, op.key) for _, op in gets if op.namespace] + list(puts)
        found: dict[tuple[tuple[str, ...], str], StateResult] = {}
        if wanted:
            keys = [(_agent(ns), layout.part(key)) for ns, key in wanted]
            state = yield calls.GetMany(self.namespace, keys)
            found = {where: result for where, result in zip(wanted, state, strict=True)}
        for n, op in gets:
            result = found.get((op.namespace, op.key))  # none for the empty namespace, as in InMemoryStore
            results[n] = _item(op.namespace, result) if result is not None and result.exists else None
        for n, op in enumerate(ops):
            if isinstance(op, SearchOp):
                results[n] = yield from self._search(op)
            elif isinstance(op, ListNamespacesOp):
                results[n] = yield from self._list_namespaces(op)
        # Writes: the puts in one transaction, then a purge per item deleted.
        now = datetime.now(UTC).isoformat()
        writes = []
        for (ns, key), op in puts.items():
            if op.value is not None:
                old = found[(ns, key)]
                created = old.value["created_at"] if old.exists else now
                record = {"value": dict(op.value), "created_at": created, "updated_at": now}
                writes.append(calls.Write(self.namespace, _agent(ns), layout.part(key), record))
        yield calls.Commit(self.namespace, writes)
        for (ns, key), op in puts.items():
            if op.value is None and found[(ns, key)].exists:
                yield calls.Purge(self.namespace, _agent(ns), layout.part(key))
        return results

    def _agents(self, prefix: str) -> Plan[list[str]]:
        agents: list[str] = []
        while True:
            page = yield calls.Agents(
                self.namespace, prefix=prefix, limit=AGENTS_PAGE, start_after=agents[-1] if agents else None
            )
            agents += page
            if len(page) < AGENTS_PAGE:
                return agents

    def _search(self, op: SearchOp) -> Plan[list[SearchItem]]:
        prefix = "".join(layout.part(label) for label in op.namespace_prefix)
        if op.limit <= 0 or op.offset < 0:
            return []
        matched: list[SearchItem] = []
        for agent in (yield from self._agents(prefix)):
            namespace = _namespace(agent)
            for result in (yield calls.Scan(self.namespace, agent, "")):
                item = _item(namespace, result, SearchItem)
                if op.filter and not all(_matches(item.value.get(k), v) for k, v in op.filter.items()):
                    continue
                matched.append(item)  # type: ignore[arg-type]
                if len(matched) >= op.offset + op.limit:
                    return matched[op.offset :]
        return matched[op.offset :]

    def _list_namespaces(self, op: ListNamespacesOp) -> Plan[list[tuple[str, ...]]]:
        found = [_namespace(agent) for agent in (yield from self._agents(""))]
        if op.match_conditions:
            found = [ns for ns in found if all(_namespace_matches(c, ns) for c in op.match_conditions)]
        if op.max_depth is not None:
            found = sorted({ns[: op.max_depth] for ns in found})
        else:
            found.sort()
        return found[op.offset : op.offset + op.limit]


def _namespace_matches(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    """A prefix or suffix of labels, "*" matching any one label."""
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    if condition.match_type == "prefix":
        pairs = zip(namespace, path, strict=False)
    elif condition.match_type == "suffix":
        pairs = zip(reversed(namespace), reversed(path), strict=False)
    else:
        raise ValueError(f'match_type must be "prefix" or "suffix", got {condition.match_type!r}')
    return all(want in ("*", have) for have, want in pairs)


def _matches(value: Any, wanted: Any) -> bool:
    """A filter's condition on one value, as LangGraph's stores read them: equality, nested
    dicts and lists compared part by part, and the operators $eq $ne $gt $gte $lt $lte."""
    if isinstance(wanted, dict):
        if any(k.startswith("$") for k in wanted):
            return all(_operator(value, k, v) for k, v in wanted.items())
        return isinstance(value, dict) and all(_matches(value.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, list | tuple):
        return (
            isinstance(value, list | tuple)
            and len(value) == len(wanted)
            and all(_matches(a, b) for a, b in zip(value, wanted, strict=True))
        )
    return bool(value == wanted)


def _operator(value: Any, operator: str, operand: Any) -> bool:
    if operator == "$eq":
        return bool(value == operand)
    if operator == "$ne":
        return bool(value != operand)
    if operator in ("$gt", "$gte", "$lt", "$lte"):
        a, b = float(value), float(operand)
        return {"$gt": a > b, "$gte": a >= b, "$lt": a < b, "$lte": a <= b}[operator]
    raise ValueError(f"unsupported filter operator {operator!r} (use $eq $ne $gt $gte $lt $lte)")


class StatehouseStore(_StorePlans):
    """A LangGraph store on a `Statehouse` client: `StatehouseStore(Statehouse(url))`.

    `namespace` is the Statehouse namespace the store lives in. The async
    methods run the blocking ones on a worker thread.
    """

    def __init__(
        self, client: Statehouse, *, namespace: str = DEFAULT_NAMESPACE, index: Any = None, ttl: Any = None
    ) -> None:
        super().__init__(namespace=namespace, index=index, ttl=ttl)
        self.client = client

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        return calls.run(self.client, self._batch(ops))

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await asyncio.to_thread(self.batch, list(ops))


class AsyncStatehouseStore(_StorePlans):
    """A LangGraph store on an `AsyncStatehouse` client: `AsyncStatehouseStore(AsyncStatehouse(url))`.

    `batch` (the blocking methods) works from any thread but the event
    loop's: it runs `abatch` on the loop that used the store last.
    """

    def __init__(
        self,
        client: AsyncStatehouse,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        index: Any = None,
        ttl: Any = None,
    ) -> None:
        super().__init__(namespace=namespace, index=index, ttl=ttl)
        self.client = client
        self._loop: asyncio.AbstractEventLoop | None = None

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        self._loop = asyncio.get_running_loop()
        return await calls.arun(self.client, self._batch(ops))

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        loop = calls.owner_loop(self._loop, "AsyncStatehouseStore")
        return asyncio.run_coroutine_threadsafe(calls.arun(self.client, self._batch(ops)), loop).result()
