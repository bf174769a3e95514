"""StatehouseStore against LangGraph's InMemoryStore as the oracle: the same random puts,
deletes, gets, searches and namespace listings must answer alike (search order aside: ours is
by escaped namespace, then key; the oracle's is insertion order, so its answer is sorted
ours before the offset and limit apply)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langgraph.store.base import GetOp, ListNamespacesOp, MatchCondition, PutOp, SearchOp
from langgraph.store.memory import InMemoryStore

from rpc.server import Daemon
from statehouse import AsyncStatehouse, Statehouse
from statehouse.langgraph import AsyncStatehouseStore, StatehouseStore
from statehouse.langgraph import _layout as layout

NAMESPACES = [("a",), ("a", "b"), ("a", "b", "c"), ("a-b",), ("b",), ("x/y", "%z"), ("é", "a")]
KEYS = ["k", "k1", "k/1", "%", "ключ"]
values = st.fixed_dictionaries(
    {"n": st.integers(-3, 3)},
    optional={
        "tag": st.sampled_from(["red", "blue"]),
        "nested": st.fixed_dictionaries({"m": st.integers(0, 2)}),
    },
)
filters = st.one_of(
    st.none(),
    st.fixed_dictionaries({"n": st.integers(-3, 3)}),
    st.fixed_dictionaries({"tag": st.sampled_from(["red", "blue"])}),
    st.fixed_dictionaries({"n": st.sampled_from([{"$gt": 0}, {"$lte": -1}, {"$ne": 2}, {"$eq": 1}])}),
    st.fixed_dictionaries({"nested": st.fixed_dictionaries({"m": st.integers(0, 2)})}),
)
prefixes = st.sampled_from([(), ("a",), ("a", "b"), ("x/y",), ("é",), ("none",)])
conditions = st.lists(
    st.builds(
        MatchCondition,
        match_type=st.sampled_from(["prefix", "suffix"]),
        path=st.lists(st.sampled_from(["a", "b", "*", "c", "%z"]), min_size=1, max_size=2).map(tuple),
    ),
    max_size=2,
).map(lambda cs: tuple(cs) or None)
ops = st.one_of(
    st.builds(PutOp, st.sampled_from(NAMESPACES), st.sampled_from(KEYS), values),
    st.builds(PutOp, st.sampled_from(NAMESPACES), st.sampled_from(KEYS), st.none()),  # a delete
    st.builds(GetOp, st.sampled_from(NAMESPACES), st.sampled_from(KEYS)),
    st.builds(SearchOp, prefixes, filters, st.integers(0, 6), st.integers(0, 4)),
    st.builds(
        ListNamespacesOp,
        match_conditions=conditions,
        max_depth=st.one_of(st.none(), st.integers(1, 3)),
        limit=st.integers(1, 10),
        offset=st.integers(0, 3),
    ),
)


def order(namespace: tuple[str, ...], key: str) -> tuple[str, str]:
    """Our search order: escaped labels, then escaped key (UTF-8 byte order of both)."""
    return ("".join(layout.part(label) for label in namespace), layout.part(key))


def oracle_answer(oracle: InMemoryStore, op: Any) -> Any:
    # InMemoryStore keeps (and lists) a namespace whose last item went, or that a get or a
    # delete only named; a namespace is its items, here as in LangGraph's Postgres store.
    for emptied in [ns for ns, items in oracle._data.items() if not items]:
        del oracle._data[emptied]
    if isinstance(op, SearchOp):
        every = oracle.batch([op._replace(limit=10_000, offset=0)])[0]
        every.sort(key=lambda item: tuple(s.encode() for s in order(item.namespace, item.key)))
        return [(i.namespace, i.key, i.value) for i in every[op.offset : op.offset + op.limit]]
    answer = oracle.batch([op])[0]
    if isinstance(op, GetOp):
        return None if answer is None else (answer.namespace, answer.key, answer.value)
    return answer


def our_answer(answer: Any, op: Any) -> Any:
    if isinstance(op, SearchOp):
        return [(i.namespace, i.key, i.value) for i in answer]
    if isinstance(op, GetOp):
        return None if answer is None else (answer.namespace, answer.key, answer.value)
    return answer


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(ops, min_size=1, max_size=4), min_size=1, max_size=12))
def test_the_store_answers_as_the_in_memory_store(daemon: Daemon, batches: list[list[Any]]) -> None:
    oracle = InMemoryStore()
    with Statehouse(f"127.0.0.1:{daemon.port}") as client:
        store = StatehouseStore(client, namespace=f"store-{uuid.uuid4().hex[:12]}")
        for batch in batches:
            # The oracle reads a batch as of its start, as we do: answer the reads first.
            expected = [oracle_answer(oracle, op) if not isinstance(op, PutOp) else None for op in batch]
            oracle.batch([op for op in batch if isinstance(op, PutOp)])
            got = [our_answer(a, op) for a, op in zip(store.batch(batch), batch, strict=True)]
            assert got == expected, batch


def test_items_keep_created_at_and_deletes_purge_history(daemon: Daemon) -> None:
    with Statehouse(f"127.0.0.1:{daemon.port}") as client:
        store = StatehouseStore(client)
        store.put(("users", "42"), "profile", {"name": "Ada"})
        first = store.get(("users", "42"), "profile")
        store.put(("users", "42"), "profile", {"name": "Ada L."})
        second = store.get(("users", "42"), "profile")
        assert first is not None and second is not None
        assert second.value == {"name": "Ada L."}
        assert second.created_at == first.created_at and second.updated_at >= first.updated_at
        # Readable in the log: the item is JSON under the namespace's agent.
        state = client.get_state("users/42/", "profile/", namespace="langgraph-store")
        assert state.value["value"] == {"name": "Ada L."}
        store.delete(("users", "42"), "profile")
        assert store.get(("users", "42"), "profile") is None
        assert client.key_history("users/42/", "profile/", namespace="langgraph-store") == []
        assert store.list_namespaces() == []


def test_no_vector_index_and_no_ttl(daemon: Daemon) -> None:
    with Statehouse(f"127.0.0.1:{daemon.port}") as client:
        with pytest.raises(ValueError, match="no vector index"):
            StatehouseStore(client, index={"dims": 3, "embed": lambda texts: [[0.0] * 3 for _ in texts]})
        store = StatehouseStore(client)
        with pytest.raises(NotImplementedError, match="TTL"):
            store.put(("a",), "k", {"n": 1}, ttl=5)
        store.put(("docs",), "d", {"text": "hello"})
        # A query is ignored without an index, as InMemoryStore does: a filtered listing.
        assert [i.key for i in store.search(("docs",), query="greeting")] == ["d"]


def test_the_async_store_and_its_blocking_methods(daemon: Daemon) -> None:
    async def main() -> None:
        async with AsyncStatehouse(f"127.0.0.1:{daemon.port}") as client:
            store = AsyncStatehouseStore(client, namespace="async-store")
            with pytest.raises(RuntimeError, match="none has yet"):
                store.get(("a",), "k")
            await store.aput(("a",), "k", {"n": 1})
            assert (await store.aget(("a",), "k")).value == {"n": 1}  # type: ignore[union-attr]
            with pytest.raises(RuntimeError, match="own event loop"):
                store.get(("a",), "k")
            seen: list[Any] = []
            worker = threading.Thread(target=lambda: seen.append(store.get(("a",), "k")))
            worker.start()
            while worker.is_alive():  # let the loop serve the worker's call
                await asyncio.sleep(0.01)
            assert seen[0].value == {"n": 1}
            assert await store.alist_namespaces() == [("a",)]

    asyncio.run(main())
