"""W8 paging and time travel: an agent of many keys, listed page by page while a writer changes
them, read whole as of the middle of its history, and one key's long history read back.

The store is built once per workload: every key written twice (generation 1,
then generation 2, so "the middle of the history" is the commit that ended
generation 1 and every key has a newer version since), plus one key of the
`log` agent with `w8_versions` versions. etcd gets the same keys and the
same two generations. During a listing a churn writer (its own client)
commits every `CHURN_GAP_S` a transaction that deletes one key, adds one and
rewrites one; every listing is checked against a model of the keys rebuilt
from the churn's own commits as of the listing's commit_ts (revision).
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import orjson

from benchmarks.agents import RPC_TIMEOUT_S, running_daemon
from benchmarks.common import BenchmarkError
from benchmarks.etcd import kv as etcd_kv
from benchmarks.etcd import rpc_pb2 as etcd_pb
from benchmarks.etcd import rpc_pb2_grpc as etcd_grpc
from benchmarks.harness import run_workers, shares
from benchmarks.workloads import PRELOAD_BATCH, Case, Context, Outcome, etcd_server, interleave, scratch
from statehouse import Statehouse

BIG_AGENT = "big"
LOG_AGENT, LOG_KEY = "log", "decision"
PAGE = 1000  # keys (or versions) asked for per page
CHURN_GAP_S = 0.01  # the churn writer's pause between commits (~100 commits/s)
CHURN_WAIT_S = 5.0  # a listing waits this long at most for the churn to commit after its first page
PRELOAD_THREADS = 4
HISTORY_THREADS = 16


def key_name(index: int) -> str:
    return f"k{index:06d}"


def item_value(index: int, generation: int) -> dict[str, Any]:
    """A ~200 B JSON value saying which key and generation it is."""
    return {
        "key": index,
        "gen": generation,
        "note": f"notes on item {index}, pass {generation}: ".ljust(160, "."),
    }


def paging_cases(ctx: Context) -> list[Case]:
    versions = f"{ctx.sizes.w8_versions:,}"
    listing = Case(
        "W8", "etcd", f"paged Range keys_only at one revision x {PAGE}, writer churning", 1, "list"
    )
    as_of = Case("W8", "etcd", f"paged Range at the middle revision x {PAGE}, values decoded", 1, "as_of")
    peers = ctx.etcd is not None
    return [
        Case("W8", "statehouse", f"list_keys_page x {PAGE}, writer churning", 1, "list",
             listing.key if peers else None),
        Case("W8", "statehouse", "get_agent_state(at_commit_ts=middle)", 1, "as_of",
             as_of.key if peers else None),
        Case("W8", "statehouse", "get_agent_state() latest", 1, "latest"),
        Case("W8", "statehouse", f"key_history_page x {PAGE}, {versions} versions", 1, "history"),
        *([listing, as_of] if peers else []),
    ]  # fmt: skip


@dataclass
class KeyModel:
    """The big agent's keys: those generation 2 left, and each churn commit's change after that."""

    initial: frozenset[str]
    changes: list[tuple[int, str, str]] = field(default_factory=list)  # (commit_ts, deleted, added)
    live: list[str] = field(init=False)  # the keys now, in no order: the churn picks from them

    def __post_init__(self) -> None:
        self.live = sorted(self.initial)

    def at(self, ts: int) -> list[str]:
        """The live keys right after commit `ts`, in order."""
        keys = set(self.initial)
        for commit_ts, deleted, added in self.changes:
            if commit_ts <= ts:
                keys.discard(deleted)
                keys.add(added)
        return sorted(keys)


class Churn:
    """A thread committing one change after another (delete a key, add one, rewrite one) until stopped."""

    def __init__(self, model: KeyModel, commit: Callable[[str, str, str], int], seed: int) -> None:
        self.model = model
        self.commit = commit
        self.random = random.Random(seed)
        self.stopping = threading.Event()
        self.committed = threading.Condition()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="churn")

    def _run(self) -> None:
        live, serial = self.model.live, itertools.count(len(self.model.changes))
        try:
            while not self.stopping.is_set():
                doomed = live.pop(self.random.randrange(len(live)))
                # Named after a random initial key, so it sorts among them: before and after the cursor.
                added = f"{key_name(self.random.randrange(len(self.model.initial)))}n{next(serial)}"
                rewritten = live[self.random.randrange(len(live))]
                ts = self.commit(doomed, added, rewritten)
                live.append(added)
                with self.committed:
                    self.model.changes.append((ts, doomed, added))
                    self.committed.notify_all()
                self.stopping.wait(CHURN_GAP_S)
        except BaseException as exc:
            self.error = exc
            with self.committed:
                self.committed.notify_all()

    def wait_past(self, ts: int) -> None:
        """Until the churn has committed after `ts`: the listing then really ran beside a writer."""

        def past() -> bool:
            return self.error is not None or bool(self.model.changes and self.model.changes[-1][0] > ts)

        with self.committed:
            if not self.committed.wait_for(past, CHURN_WAIT_S):
                raise BenchmarkError(f"the churn writer committed nothing within {CHURN_WAIT_S} s")

    @contextmanager
    def running(self) -> Iterator[Churn]:
        self.thread.start()
        try:
            yield self
        finally:
            self.stopping.set()
            self.thread.join()
            if self.error is not None:
                raise BenchmarkError(f"the churn writer failed: {self.error!r}") from self.error

    def commits_after(self, ts: int) -> int:
        return sum(1 for commit_ts, _, _ in self.model.changes if commit_ts > ts)


def listing_figures(keys: int, pages: int, elapsed: float, churned: int) -> dict[str, float]:
    return {"items_per_s": keys / elapsed, "elapsed_s": elapsed, "pages": pages, "writer_commits": churned}


def check_listing(system: str, listed: Sequence[str], model: KeyModel, ts: int) -> None:
    expected = model.at(ts)
    if list(listed) != expected:
        missing, extra = set(expected) - set(listed), set(listed) - set(expected)
        raise BenchmarkError(
            f"{system}: the listing as of {ts} has {len(listed)} keys, the model {len(expected)} "
            f"({len(missing)} missing, e.g. {sorted(missing)[:3]}; {len(extra)} extra, "
            f"e.g. {sorted(extra)[:3]}; or out of order)"
        )


def paging_workload(ctx: Context) -> Outcome:
    """W8: build the store on one daemon (and one etcd), then interleave the cases."""
    info: dict[str, Any] = {}
    with scratch(ctx, "statehouse-bench-") as tmp, ExitStack() as stack:
        daemon = stack.enter_context(running_daemon(tmp / "data"))
        client = stack.enter_context(Statehouse(daemon.addr))
        ours = StatehouseStore(ctx, daemon.addr, client, info)
        theirs = None
        if ctx.etcd:
            etcd = stack.enter_context(etcd_server(ctx, tmp / "etcd"))
            channel = stack.enter_context(grpc.insecure_channel(etcd.addr))
            theirs = EtcdStore(ctx, etcd.addr, etcd_grpc.KVStub(channel), info)

        def run_one(case: Case) -> dict[str, float]:
            if case.system == "etcd":
                assert theirs is not None
                return theirs.listing() if case.shape == "list" else theirs.as_of()
            return {
                "list": ours.listing,
                "as_of": ours.as_of,
                "latest": ours.latest,
                "history": ours.history,
            }[case.shape]()

        results = interleave(ctx, paging_cases(ctx), run_one)
    return Outcome(results, info)


def preload(load: Callable[[range, int], Any], keys: int, generation: int) -> float:
    """Write every key of one generation from a few threads; returns keys per second."""
    batches = [range(first, min(first + PRELOAD_BATCH, keys)) for first in range(0, keys, PRELOAD_BATCH)]
    began = time.perf_counter()
    with ThreadPoolExecutor(PRELOAD_THREADS) as pool:
        list(pool.map(lambda batch: load(batch, generation), batches))
    return keys / (time.perf_counter() - began)


# -- Statehouse ----------------------------------------------------------------------------


class VersionWriter:
    """Writes version after version of the log agent's one key (W8's long history)."""

    def __init__(self, client: Statehouse, writer: int) -> None:
        self.client = client
        self.writer = writer

    def prepare(self, step: int) -> dict[str, Any]:
        return {"writer": self.writer, "step": step, "decision": "approve" if step % 3 else "escalate"}

    def run(self, value: dict[str, Any]) -> None:
        with self.client.begin_transaction() as tx:
            tx.write(LOG_AGENT, LOG_KEY, value)


class StatehouseStore:
    def __init__(self, ctx: Context, addr: str, client: Statehouse, info: dict[str, Any]) -> None:
        self.addr = addr
        self.client = client
        self.keys = ctx.sizes.w8_keys
        self.versions = ctx.sizes.w8_versions
        self.runs = itertools.count()

        def load(batch: range, generation: int) -> None:
            with client.begin_transaction() as tx:
                for index in batch:
                    tx.write(BIG_AGENT, key_name(index), item_value(index, generation))

        info["statehouse_preload_keys_per_s"] = preload(load, self.keys, 1)
        self.middle_ts = client.list_keys_page(BIG_AGENT, limit=1).commit_ts
        preload(load, self.keys, 2)
        self.model = KeyModel(frozenset(key_name(i) for i in range(self.keys)))
        writers = [VersionWriter(client, i) for i in range(HISTORY_THREADS)]
        written = run_workers(writers, shares(self.versions, HISTORY_THREADS), 0)
        info["statehouse_history_versions_written_per_s"] = written.figures()["ops_per_s"]

    def listing(self) -> dict[str, float]:
        with Statehouse(self.addr) as writer:

            def commit(doomed: str, added: str, rewritten: str) -> int:
                with writer.begin_transaction() as tx:
                    tx.delete(BIG_AGENT, doomed)
                    tx.write(BIG_AGENT, added, item_value(-1, 3))
                    tx.write(BIG_AGENT, rewritten, item_value(-2, 3))
                assert tx.commit_ts is not None
                return tx.commit_ts

            churn = Churn(self.model, commit, seed=next(self.runs))
            with churn.running():
                listed: list[str] = []
                token, pages, elapsed, first_ts = None, 0, 0.0, 0
                while True:
                    began = time.perf_counter()
                    page = self.client.list_keys_page(BIG_AGENT, limit=PAGE, page_token=token)
                    elapsed += time.perf_counter() - began
                    listed += page.items
                    pages += 1
                    if pages == 1:
                        first_ts = page.commit_ts
                        churn.wait_past(first_ts)  # outside the timing
                    elif page.commit_ts != first_ts:
                        raise BenchmarkError(
                            f"page {pages} is as of {page.commit_ts}, the first of {first_ts}"
                        )
                    token = page.next_page_token
                    if token is None:
                        break
            churned = churn.commits_after(first_ts)
        check_listing("statehouse", listed, self.model, first_ts)
        return listing_figures(len(listed), pages, elapsed, churned)

    def as_of(self) -> dict[str, float]:
        began = time.perf_counter()
        state = self.client.get_agent_state(BIG_AGENT, at_commit_ts=self.middle_ts)
        elapsed = time.perf_counter() - began
        wrong = [
            key
            for key, entry in state.entries.items()
            if entry.version != 1 or entry.value["gen"] != 1 or key_name(entry.value["key"]) != key
        ]
        if state.commit_ts != self.middle_ts or len(state.entries) != self.keys or wrong:
            raise BenchmarkError(
                f"get_agent_state at {self.middle_ts}: {len(state.entries)} keys as of {state.commit_ts}, "
                f"{len(wrong)} not at generation 1 (expected {self.keys})"
            )
        return {"items_per_s": self.keys / elapsed, "elapsed_s": elapsed}

    def latest(self) -> dict[str, float]:
        began = time.perf_counter()
        state = self.client.get_agent_state(BIG_AGENT)
        elapsed = time.perf_counter() - began
        if sorted(state.entries) != self.model.at(state.commit_ts):
            raise BenchmarkError(f"get_agent_state latest: {len(state.entries)} keys, not the model's")
        return {"items_per_s": len(state.entries) / elapsed, "elapsed_s": elapsed}

    def history(self) -> dict[str, float]:
        versions: list[Any] = []
        token, pages = None, 0
        began = time.perf_counter()
        while True:
            page = self.client.key_history_page(LOG_AGENT, LOG_KEY, limit=PAGE, page_token=token)
            versions += page.items
            pages += 1
            token = page.next_page_token
            if token is None:
                break
        elapsed = time.perf_counter() - began
        numbers = [v.version for v in versions]
        ordered = all(a.commit_ts > b.commit_ts for a, b in itertools.pairwise(versions))
        if numbers != list(range(self.versions, 0, -1)) or not ordered:
            raise BenchmarkError(
                f"key_history of {LOG_AGENT}/{LOG_KEY}: {len(numbers)} versions for {self.versions} written, "
                "or not newest first"
            )
        return {"items_per_s": len(versions) / elapsed, "elapsed_s": elapsed, "pages": pages}


# -- etcd --------------------------------------------------------------------------------------


def prefix_range(agent: str) -> tuple[bytes, bytes]:
    """[key, range_end) of every key of `agent`."""
    prefix = etcd_kv.etcd_key(agent, "")
    return prefix, prefix[:-1] + bytes([prefix[-1] + 1])


class EtcdStore:
    def __init__(self, ctx: Context, addr: str, stub: etcd_grpc.KVStub, info: dict[str, Any]) -> None:
        self.addr = addr
        self.stub = stub
        self.keys = ctx.sizes.w8_keys
        self.runs = itertools.count()

        def load(batch: range, generation: int) -> None:
            items = [
                (etcd_kv.etcd_key(BIG_AGENT, key_name(i)), orjson.dumps(item_value(i, generation)))
                for i in batch
            ]
            stub.Txn(etcd_kv.puts(items), timeout=RPC_TIMEOUT_S)

        info["etcd_preload_keys_per_s"] = preload(load, self.keys, 1)
        self.middle_revision = stub.Range(
            etcd_pb.RangeRequest(key=b"/"), timeout=RPC_TIMEOUT_S
        ).header.revision
        preload(load, self.keys, 2)
        self.model = KeyModel(frozenset(key_name(i) for i in range(self.keys)))

    def pages(self, revision: int, keys_only: bool) -> Iterator[etcd_pb.RangeResponse]:
        """The big agent's keys at `revision` (0: the latest, then that of the first page), a page each."""
        key, end = prefix_range(BIG_AGENT)
        while True:
            request = etcd_pb.RangeRequest(
                key=key, range_end=end, limit=PAGE, revision=revision, keys_only=keys_only
            )
            response = self.stub.Range(request, timeout=RPC_TIMEOUT_S)
            yield response
            if not response.more:
                return
            # A Range's header carries the store's revision when it ran, not the one asked for.
            revision = revision or response.header.revision
            key = response.kvs[-1].key + b"\x00"

    def listing(self) -> dict[str, float]:
        prefix = len(prefix_range(BIG_AGENT)[0])
        with grpc.insecure_channel(self.addr) as channel:
            writer = etcd_grpc.KVStub(channel)

            def commit(doomed: str, added: str, rewritten: str) -> int:
                ops = [
                    etcd_pb.RequestOp(
                        request_delete_range=etcd_pb.DeleteRangeRequest(
                            key=etcd_kv.etcd_key(BIG_AGENT, doomed)
                        )
                    ),
                    *etcd_kv.puts(
                        [
                            (etcd_kv.etcd_key(BIG_AGENT, added), orjson.dumps(item_value(-1, 3))),
                            (etcd_kv.etcd_key(BIG_AGENT, rewritten), orjson.dumps(item_value(-2, 3))),
                        ]
                    ).success,
                ]
                return int(writer.Txn(etcd_pb.TxnRequest(success=ops), timeout=RPC_TIMEOUT_S).header.revision)

            churn = Churn(self.model, commit, seed=next(self.runs))
            with churn.running():
                listed: list[str] = []
                pages, elapsed, revision = 0, 0.0, 0
                responses = self.pages(0, keys_only=True)
                while True:
                    began = time.perf_counter()
                    response = next(responses, None)
                    elapsed += time.perf_counter() - began
                    if response is None:
                        break
                    listed += [kv.key[prefix:].decode() for kv in response.kvs]
                    pages += 1
                    if pages == 1:
                        revision = response.header.revision
                        churn.wait_past(revision)  # outside the timing
            churned = churn.commits_after(revision)
        check_listing("etcd", listed, self.model, revision)
        return listing_figures(len(listed), pages, elapsed, churned)

    def as_of(self) -> dict[str, float]:
        seen = wrong = 0
        began = time.perf_counter()
        for response in self.pages(self.middle_revision, keys_only=False):
            for kv in response.kvs:
                value = orjson.loads(kv.value)
                seen += 1
                wrong += value["gen"] != 1
        elapsed = time.perf_counter() - began
        if seen != self.keys or wrong:
            raise BenchmarkError(
                f"etcd at revision {self.middle_revision}: {seen} keys, {wrong} not at generation 1"
            )
        return {"items_per_s": seen / elapsed, "elapsed_s": elapsed}
