"""LangGraph checkpointers on Statehouse: `StatehouseSaver` and `AsyncStatehouseSaver`.

A thread is an agent (agent_id = thread_id) of one Statehouse namespace
("langgraph" by default). Its keys (see `_layout`):

    checkpoint/<checkpoint_ns>/<checkpoint_id>/        the checkpoint, its metadata, its parent's id
    blob/<checkpoint_ns>/<channel>/<version>/          a channel's value at that version
    write/<checkpoint_ns>/<checkpoint_id>/<task>/<i>/  a pending write of a task
    run/<run_id>/                                      a run that wrote checkpoints here

and a second namespace ("langgraph.runs") keeps, per run, the checkpoints
it wrote, for `delete_for_runs`. A `put` writes the checkpoint, the channel
values that changed and the run's index entries in one transaction; a
`put_writes` writes all its writes in another (a regular write only if its
key has none yet: the first writer wins; special ones, errors and
interrupts, overwrite). Deleting (`delete_thread`, `delete_for_runs`,
`prune`) purges: the values leave the store with their history, and the
event log keeps a purge event.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import ormsgpack
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.types import INTERRUPT, RESUME

from statehouse import AsyncStatehouse, DeadlineExceededError, Statehouse
from statehouse.langgraph import _layout as layout
from statehouse.langgraph._calls import (
    Agents,
    Commit,
    Get,
    GetMany,
    Keys,
    Plan,
    Purge,
    Scan,
    Write,
    arun,
    owner_loop,
    run,
)
from statehouse.types import StateResult

DEFAULT_NAMESPACE = "langgraph"
LIST_PAGE = 64  # checkpoints read per call while listing


def _thread(config: RunnableConfig) -> str:
    configurable = config.get("configurable") or {}
    if "thread_id" not in configurable:
        raise ValueError('the config has no "thread_id" in "configurable"')
    return layout.agent_id("thread_id", str(configurable["thread_id"]))


def _ids(name: str, ids: Sequence[str]) -> None:
    """A sequence of ids, not one id (a string is a sequence of its characters)."""
    if isinstance(ids, str | bytes):
        raise TypeError(f"{name} must be a list of ids, not one string: {ids!r}")


def _sort_key(write: tuple[str, str, int, str]) -> tuple[str, str, int]:
    """Live execution's order of a step's writes: (task_path, task_id, idx)."""
    task_id, _channel, idx, task_path = write
    return (task_path, task_id, idx)


class _SaverPlans(BaseCheckpointSaver[str]):
    """What both savers do, as plans (statehouse/langgraph/_calls.py)."""

    def __init__(
        self, *, namespace: str = DEFAULT_NAMESPACE, serde: SerializerProtocol | None = None
    ) -> None:
        super().__init__(serde=serde)
        self.namespace = namespace
        self.runs_namespace = namespace + ".runs"

    # -- writing --------------------------------------------------------------------------

    def _put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Plan[RunnableConfig]:
        thread = _thread(config)
        ns = config["configurable"].get("checkpoint_ns", "")
        checkpoint_id = checkpoint["id"]
        stored: dict[str, Any] = dict(checkpoint)
        values: dict[str, Any] = stored.pop("channel_values", None) or {}
        writes = []
        for channel, version in new_versions.items():
            typed = self.serde.dumps_typed(values[channel]) if channel in values else ("empty", b"")
            writes.append(Write(self.namespace, thread, layout.blob_key(ns, channel, version), _pack(typed)))
        meta = get_checkpoint_metadata(config, metadata)
        record = [*self.serde.dumps_typed(stored), *self.serde.dumps_typed(meta), get_checkpoint_id(config)]
        writes.append(
            Write(self.namespace, thread, layout.checkpoint_key(ns, checkpoint_id), ormsgpack.packb(record))
        )
        run_id = meta.get("run_id")
        if run_id:
            run_agent = layout.agent_id("run_id", str(run_id))
            writes.append(Write(self.namespace, thread, layout.run_key(run_agent), 1))
            index_key = layout.run_index_key(thread, ns, checkpoint_id)
            writes.append(Write(self.runs_namespace, run_agent, index_key, 1))
        yield Commit(self.namespace, writes)
        return {"configurable": {"thread_id": thread, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}}

    def _put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str
    ) -> Plan[None]:
        thread = _thread(config)
        ns = config["configurable"].get("checkpoint_ns", "")
        checkpoint_id = config["configurable"]["checkpoint_id"]
        staged = []
        for n, (channel, value) in enumerate(writes):
            idx = WRITES_IDX_MAP.get(channel, n)
            key = layout.write_key(ns, checkpoint_id, task_id, idx)
            record = ormsgpack.packb([channel, *self.serde.dumps_typed(value), task_path])
            # A task's regular writes are kept as first written; special ones are replaced.
            staged.append(Write(self.namespace, thread, key, record, if_absent=idx >= 0))
        yield Commit(self.namespace, staged)

    # -- reading --------------------------------------------------------------------------

    def _get_tuple(self, config: RunnableConfig) -> Plan[CheckpointTuple | None]:
        thread = _thread(config)
        ns = config["configurable"].get("checkpoint_ns", "")
        checkpoint_id = get_checkpoint_id(config)
        if checkpoint_id:
            found = yield Get(self.namespace, thread, layout.checkpoint_key(ns, checkpoint_id))
            if not found.exists:
                return None
            return (yield from self._load(thread, ns, checkpoint_id, found.value, config))
        latest = yield Scan(self.namespace, thread, layout.checkpoints_prefix(ns), reverse=True, limit=1)
        if not latest:
            return None
        return (yield from self._load(thread, ns, layout.parts(latest[0].key)[2], latest[0].value))

    def _load(
        self,
        thread: str,
        ns: str,
        checkpoint_id: str,
        record: bytes,
        config: RunnableConfig | None = None,
        metadata: CheckpointMetadata | None = None,
    ) -> Plan[CheckpointTuple]:
        c_type, c_bytes, m_type, m_bytes, parent = ormsgpack.unpackb(record)
        checkpoint = self.serde.loads_typed((c_type, c_bytes))
        if metadata is None:
            metadata = self.serde.loads_typed((m_type, m_bytes))
        versions = checkpoint.get("channel_versions", {})
        values: dict[str, Any] = {}
        if versions:
            keys = [(thread, layout.blob_key(ns, ch, v)) for ch, v in versions.items()]
            blobs = yield GetMany(self.namespace, keys)
            for channel, blob in zip(versions, blobs, strict=True):
                if blob.exists:
                    typed = tuple(ormsgpack.unpackb(blob.value))
                    if typed[0] != "empty":
                        values[channel] = self.serde.loads_typed(typed)
        found = yield Scan(self.namespace, thread, layout.writes_prefix(ns, checkpoint_id))
        pending = self._writes(found)
        return CheckpointTuple(
            config=config
            or {"configurable": {"thread_id": thread, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}},
            checkpoint={**checkpoint, "channel_values": values},  # type: ignore[typeddict-item]
            metadata=metadata,
            parent_config=(
                {"configurable": {"thread_id": thread, "checkpoint_ns": ns, "checkpoint_id": parent}}
                if parent
                else None
            ),
            pending_writes=pending,
        )

    def _writes(self, found: list[StateResult]) -> list[PendingWrite]:
        decoded = []
        for result in found:
            _, _, _, task_id, idx = layout.parts(result.key or "")
            channel, w_type, w_bytes, task_path = ormsgpack.unpackb(result.value)
            decoded.append(((task_id, channel, int(idx), task_path), (w_type, w_bytes)))
        decoded.sort(key=lambda pair: _sort_key(pair[0]))
        return [
            (task_id, channel, self.serde.loads_typed(typed)) for (task_id, channel, _, _), typed in decoded
        ]

    def _list_page(
        self,
        thread: str,
        ns: str | None,
        filter: dict[str, Any] | None,
        before_id: str | None,
        after: Any,
        limit: int,
    ) -> Plan[tuple[list[CheckpointTuple], Any]]:
        """At most `limit` checkpoints of a thread, newest first, from where `after` (None at
        first) says; and where to go on from (None: no more).

        In one checkpoint namespace that is a reverse scan of its keys. Across them (ns None)
        the thread's checkpoint keys are listed once and ordered by checkpoint id, newest
        first whatever the namespace, as LangGraph's other savers order them; `after` is then
        the keys still to read."""
        if ns is None:
            remaining = after
            if remaining is None:
                remaining = yield Keys(self.namespace, thread, layout.checkpoints_prefix(None))
                remaining.sort(key=lambda key: layout.parts(key)[2], reverse=True)
            page, rest = remaining[:limit], remaining[limit:]
            found = (
                [r for r in (yield GetMany(self.namespace, [(thread, k) for k in page])) if r.exists]
                if page
                else []
            )
            following = rest or None
        else:
            start = after
            if start is None and before_id is not None:
                start = layout.checkpoint_key(ns, before_id)
            found = yield Scan(
                self.namespace,
                thread,
                layout.checkpoints_prefix(ns),
                reverse=True,
                limit=limit,
                start_after=start,
            )
            following = found[-1].key if len(found) == limit else None
        tuples = []
        for result in found:
            _, cp_ns, checkpoint_id = layout.parts(result.key or "")
            if before_id is not None and checkpoint_id >= before_id:
                continue
            record = ormsgpack.unpackb(result.value)
            metadata = self.serde.loads_typed((record[2], record[3]))
            if filter and not all(metadata.get(k) == v for k, v in filter.items()):
                continue
            tuples.append((yield from self._load(thread, cp_ns, checkpoint_id, result.value, None, metadata)))
        return tuples, following

    def _threads(self, config: RunnableConfig | None, after: str | None) -> Plan[list[str]]:
        if config is not None:
            return [] if after is not None else [_thread(config)]
        return (yield Agents(self.namespace, limit=LIST_PAGE, start_after=after))

    # -- deleting and copying -------------------------------------------------------------

    def _delete_thread(self, thread_id: str) -> Plan[None]:
        thread = layout.agent_id("thread_id", str(thread_id))
        for key in (yield Keys(self.namespace, thread, "run/")):
            yield Purge(self.runs_namespace, layout.parts(key)[1], layout.part(thread))
        yield Purge(self.namespace, thread)

    def _delete_for_runs(self, run_ids: Sequence[str]) -> Plan[None]:
        _ids("run_ids", run_ids)
        for run_id in run_ids:
            run_agent = layout.agent_id("run_id", str(run_id))
            threads = set()
            for key in (yield Keys(self.runs_namespace, run_agent)):
                thread, ns, checkpoint_id = layout.parts(key)
                threads.add(thread)
                yield from self._drop_checkpoint(thread, ns, checkpoint_id)
            for thread in sorted(threads):
                yield Purge(self.namespace, thread, layout.run_key(run_agent))
                yield from self._drop_unused_blobs(thread)
            yield Purge(self.runs_namespace, run_agent)

    def _drop_checkpoint(self, thread: str, ns: str, checkpoint_id: str) -> Plan[None]:
        yield Purge(self.namespace, thread, layout.checkpoint_key(ns, checkpoint_id))
        yield Purge(self.namespace, thread, layout.writes_prefix(ns, checkpoint_id))

    def _drop_unused_blobs(self, thread: str) -> Plan[None]:
        """Purge the channel values no checkpoint of the thread refers to any more.

        The values are listed before the checkpoints are read: a value listed was committed
        with its checkpoint, which the later read sees, so a graph that goes on meanwhile
        never loses the values of its new checkpoints."""
        blobs = yield Keys(self.namespace, thread, "blob/")
        used: set[str] = set()
        for result in (yield Scan(self.namespace, thread, layout.checkpoints_prefix(None))):
            _, ns, _ = layout.parts(result.key)
            record = ormsgpack.unpackb(result.value)
            checkpoint = self.serde.loads_typed((record[0], record[1]))
            used.update(
                layout.blob_key(ns, ch, v) for ch, v in checkpoint.get("channel_versions", {}).items()
            )
        for key in blobs:
            if key not in used:
                yield Purge(self.namespace, thread, key)

    def _prune(self, thread_ids: Sequence[str], strategy: str) -> Plan[None]:
        _ids("thread_ids", thread_ids)
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f'prune strategy must be "keep_latest" or "delete", got {strategy!r}')
        for thread_id in thread_ids:
            if strategy == "delete":
                yield from self._delete_thread(thread_id)
                continue
            thread = layout.agent_id("thread_id", str(thread_id))
            found = yield Scan(self.namespace, thread, layout.checkpoints_prefix(None), reverse=True)
            kept: set[str] = set()
            runs_kept: set[str] = set()
            runs_dropped: set[str] = set()
            orphans = []  # the kept checkpoints, rewritten without their parents (which go)
            for result in found:
                key = result.key or ""
                _, ns, checkpoint_id = layout.parts(key)
                record = ormsgpack.unpackb(result.value)
                run_id = str(self.serde.loads_typed((record[2], record[3])).get("run_id") or "")
                if ns not in kept:  # newest first: the first of each namespace is its latest
                    kept.add(ns)
                    runs_kept.add(run_id)
                    if record[4] is not None:
                        orphan = ormsgpack.packb([*record[:4], None])
                        orphans.append(Write(self.namespace, thread, key, orphan))
                    continue
                runs_dropped.add(run_id)
                yield from self._drop_checkpoint(thread, ns, checkpoint_id)
                if run_id:
                    index_key = layout.run_index_key(thread, ns, checkpoint_id)
                    yield Purge(self.runs_namespace, run_id, index_key)
            yield Commit(self.namespace, orphans)
            for run_id in sorted(runs_dropped - runs_kept - {""}):
                yield Purge(self.namespace, thread, layout.run_key(run_id))
            yield from self._drop_unused_blobs(thread)

    def _copy_thread(self, source_thread_id: str, target_thread_id: str) -> Plan[None]:
        source = layout.agent_id("thread_id", str(source_thread_id))
        target = layout.agent_id("thread_id", str(target_thread_id))
        found = yield Scan(self.namespace, source, "")
        writes = [Write(self.namespace, target, r.key, r.value) for r in found]
        for result in found:
            if result.key.startswith("checkpoint/"):
                _, ns, checkpoint_id = layout.parts(result.key)
                record = ormsgpack.unpackb(result.value)
                run_id = self.serde.loads_typed((record[2], record[3])).get("run_id")
                if run_id:
                    index_key = layout.run_index_key(target, ns, checkpoint_id)
                    writes.append(Write(self.runs_namespace, str(run_id), index_key, 1))
        yield Commit(self.namespace, writes)

    def get_next_version(self, current: str | None, channel: None) -> str:
        """A version that sorts after `current`: a zero-padded counter and a random tiebreak."""
        if current is None:
            number = 0
        elif isinstance(current, int):
            number = current
        else:
            number = int(str(current).split(".")[0])
        return f"{number + 1:032}.{random.random():016}"

    # -- the saver's methods, blocking and async, each written once over the plans above --------
    # `_sync(plan)` and `_async(plan)` run a plan with the subclass's client.

    def _sync(self, plan: Plan[Any]) -> Any:
        raise NotImplementedError

    async def _async(self, plan: Plan[Any]) -> Any:
        raise NotImplementedError

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._sync(self._get_tuple(config))  # type: ignore[no-any-return]

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._async(self._get_tuple(config))  # type: ignore[no-any-return]

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        listing = _Listing.of(config, filter, before, limit)
        while items := self._sync(self._list_step(listing)):
            yield from items

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        listing = _Listing.of(config, filter, before, limit)
        while items := await self._async(self._list_step(listing)):
            for item in items:
                yield item

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._sync(self._put(config, checkpoint, metadata, new_versions))  # type: ignore[no-any-return]

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await self._async(self._put(config, checkpoint, metadata, new_versions))  # type: ignore[no-any-return]

    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        self._sync(self._put_writes(config, writes, task_id, task_path))

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        await self._async(self._put_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._sync(self._delete_thread(thread_id))

    async def adelete_thread(self, thread_id: str) -> None:
        await self._async(self._delete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._sync(self._delete_for_runs(run_ids))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._async(self._delete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._sync(self._copy_thread(source_thread_id, target_thread_id))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._async(self._copy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._sync(self._prune(thread_ids, strategy))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self._async(self._prune(thread_ids, strategy))

    def _list_step(self, listing: _Listing) -> Plan[Sequence[CheckpointTuple]]:
        """The next checkpoints of a listing, thread after thread, page after page (none: it
        is over); `listing` keeps where it got to."""
        while listing.left is None or listing.left > 0:
            if not listing.threads:
                listing.threads = yield from self._threads(listing.config, listing.thread_after)
                if not listing.threads:
                    return []
                listing.thread_after = listing.threads[-1]
            page, listing.after = yield from self._list_page(
                listing.threads[0], listing.ns, listing.filter, listing.before_id, listing.after, LIST_PAGE
            )
            if listing.after is None:
                listing.threads.pop(0)
            items = [i for i in page if listing.only_id in (None, i.config["configurable"]["checkpoint_id"])]
            if listing.left is not None:
                items = items[: listing.left]
                listing.left -= len(items)
            if items:
                return items
        return []


def interrupted(found: CheckpointTuple) -> bool:
    """For `wait_for_state`: the thread stopped at an `interrupt()` and waits for `Command(resume=...)`
    (an interrupt already answered, whose resume is pending, does not count)."""
    channels = {channel for _task, channel, _value in found.pending_writes or ()}
    return INTERRUPT in channels and RESUME not in channels


def _latest(config: RunnableConfig) -> RunnableConfig:
    """The config of the thread's latest checkpoint (in the config's checkpoint namespace)."""
    configurable = {k: v for k, v in (config.get("configurable") or {}).items() if k != "checkpoint_id"}
    return {"configurable": configurable}


@dataclass
class _Listing:
    """Where a `list` has got to."""

    config: RunnableConfig | None
    filter: dict[str, Any] | None
    before_id: str | None
    only_id: str | None
    left: int | None
    ns: str | None
    threads: list[str] = field(default_factory=list)
    thread_after: str | None = None
    after: Any = None

    @classmethod
    def of(
        cls,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> _Listing:
        ns = None if config is None else config["configurable"].get("checkpoint_ns")
        before_id = get_checkpoint_id(before) if before else None
        only_id = get_checkpoint_id(config) if config else None
        return cls(config, filter, before_id, only_id or None, limit, ns)


def _pack(typed: tuple[str, bytes]) -> bytes:
    return ormsgpack.packb(list(typed))


class StatehouseSaver(_SaverPlans):
    """A LangGraph checkpointer on a `Statehouse` client: `StatehouseSaver(Statehouse(url))`.

    `namespace` is the Statehouse namespace the threads live in (and
    `namespace + ".runs"` the run index). The async methods run the blocking
    ones on a worker thread; for asyncio code `AsyncStatehouseSaver` is the
    better fit.
    """

    def __init__(
        self,
        client: Statehouse,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(namespace=namespace, serde=serde)
        self.client = client

    def _sync(self, plan: Plan[Any]) -> Any:
        return run(self.client, plan)

    async def _async(self, plan: Plan[Any]) -> Any:
        return await asyncio.to_thread(run, self.client, plan)

    def wait_for_state(
        self,
        config: RunnableConfig,
        until: Callable[[CheckpointTuple], bool],
        *,
        timeout: float | None = None,
    ) -> CheckpointTuple:
        """Block until the thread's latest checkpoint (with its pending writes) satisfies `until`,
        and return it; from any process, on Statehouse's watch, with no polling.

        `until=interrupted` waits for the thread to stop at an `interrupt()`. Raises
        DeadlineExceededError after `timeout` seconds.
        """
        thread = _thread(config)
        late = DeadlineExceededError(
            f"thread {thread!r} did not reach the state waited for within {timeout} s"
            if timeout is not None
            else f"the watch of thread {thread!r} ended before the thread reached that state"
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        # Watching first, then reading: a commit after the read is delivered, none is missed.
        with self.client.watch(thread, namespace=self.namespace) as watch:
            found = self.get_tuple(_latest(config))
            if found is not None and until(found):
                return found
            timer = None
            if deadline is not None:
                timer = threading.Timer(max(0.0, deadline - time.monotonic()), watch.cancel)
                timer.start()
            try:
                for _commit in watch:
                    found = self.get_tuple(_latest(config))
                    if found is not None and until(found):
                        return found
            finally:
                if timer is not None:
                    timer.cancel()
        raise late


class AsyncStatehouseSaver(_SaverPlans):
    """A LangGraph checkpointer on an `AsyncStatehouse` client:
    `AsyncStatehouseSaver(AsyncStatehouse(url))`.

    The blocking methods (which LangGraph calls from sync code, such as
    `graph.get_state`) work from any thread but the event loop's: they run
    the async ones on the loop that used the saver last.
    """

    def __init__(
        self,
        client: AsyncStatehouse,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(namespace=namespace, serde=serde)
        self.client = client
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _async(self, plan: Plan[Any]) -> Any:
        self._loop = asyncio.get_running_loop()
        return await arun(self.client, plan)

    def _sync(self, plan: Plan[Any]) -> Any:
        """The plan run on the saver's event loop, from another thread."""
        loop = owner_loop(self._loop, "AsyncStatehouseSaver")
        return asyncio.run_coroutine_threadsafe(arun(self.client, plan), loop).result()

    async def await_for_state(
        self,
        config: RunnableConfig,
        until: Callable[[CheckpointTuple], bool],
        *,
        timeout: float | None = None,
    ) -> CheckpointTuple:
        """`StatehouseSaver.wait_for_state` for asyncio: the thread's latest checkpoint once it satisfies
        `until`. Raises DeadlineExceededError after `timeout` seconds."""
        thread = _thread(config)
        try:
            async with asyncio.timeout(timeout):
                watch = await self.client.watch(thread, namespace=self.namespace)
                try:
                    found = await self.aget_tuple(_latest(config))
                    if found is not None and until(found):
                        return found
                    async for _commit in watch:
                        found = await self.aget_tuple(_latest(config))
                        if found is not None and until(found):
                            return found
                finally:
                    await watch.aclose()
        except TimeoutError:
            pass
        raise DeadlineExceededError(
            f"thread {thread!r} did not reach the state waited for within {timeout} s"
        )
