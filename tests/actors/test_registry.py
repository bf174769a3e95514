"""actors/registry.py: the bound on live namespace actors. Those past it retire; those
holding transactions leave them dormant for the next actor, and dormant transactions
still expire. Commits racing retirements lose nothing, and a daemon that touches many
namespaces, or holds a transaction open in each, keeps few threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from helpers import W, fresh_id, stored
from test_actors import FakeClock
from threads import run_threads

from actors import ActorConfig, ActorSystem, Mutation, TransactionClosed, TransactionExpired, TxnOpen
from statehouse import Statehouse
from statehouse._proto import statehouse_pb2 as pb
from statehouse._proto import statehouse_pb2_grpc as pb_grpc
from statehouse.testing import DaemonProcess
from storage import Store

# -- the bound on live namespace actors ----------------------------------------------


def namespace_actor_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("NamespaceActor-")]


def actor_namespace(thread: threading.Thread) -> str | None:
    """The namespace of the actor a pykka thread runs (None once it has finished)."""
    target = getattr(thread, "_target", None)
    actor = getattr(target, "__self__", None)
    return getattr(actor, "namespace", None)


@pytest.fixture
def bounded(store: Store) -> Iterator[ActorSystem]:
    system = ActorSystem(store, ActorConfig(max_idle_actors=8)).start()
    yield system
    system.stop()


def live_namespaces(system: ActorSystem) -> list[str]:
    # A retire request queued before the first status call is handled before
    # that actor answers it, so the second call lists only actors still live.
    system.status(W)
    return [ns["namespace"] for ns in system.status(W)["namespaces"]]


def test_idle_actors_past_the_bound_retire(bounded: ActorSystem) -> None:
    threads_before = threading.active_count()
    ids = {f"ns{n}": fresh_id(f"ns{n}") for n in range(100)}
    stamps = {}
    for ns, txn_id in ids.items():
        stamps[ns] = bounded.commit(txn_id, [Mutation(ns, "a", "k", ns.encode())], W, open=TxnOpen())

    # With every retire request handled, at most max_idle actors stay: those
    # never asked (the newest), while every actor asked retires, being idle.
    live = live_namespaces(bounded)
    assert 1 <= len(live) <= 8, live
    assert "ns99" in live  # the most recently used stays
    # Retired actors' threads end (joined, not slept on); no thread per namespace stays behind.
    for thread in namespace_actor_threads():
        if actor_namespace(thread) not in live:
            thread.join(W)
            assert not thread.is_alive(), thread.name
    assert threading.active_count() - threads_before <= len(live)

    assert all(stored(bounded, ns, "k") == (ns.encode(), ts) for ns, ts in stamps.items())
    assert len(set(stamps.values())) == 100

    # A retired namespace still knows its used ids (a commit opening one again
    # is answered as a retry, writing nothing), and takes new transactions.
    assert (
        bounded.commit(ids["ns0"], [Mutation("ns0", "a", "k", b"again")], W, open=TxnOpen()) == stamps["ns0"]
    )
    assert stored(bounded, "ns0", "k") == (b"ns0", stamps["ns0"])
    with pytest.raises(TransactionClosed, match="was used before"):
        bounded.stage(ids["ns0"], [Mutation("ns0", "a", "k", b"again")], W, open=TxnOpen())
    assert bounded.commit(fresh_id("ns0"), [Mutation("ns0", "a", "j", b"1")], W, open=TxnOpen()) > 0
    assert stored(bounded, "ns0", "k") == (b"ns0", stamps["ns0"])


def test_an_actor_holding_a_transaction_retires_and_the_transaction_waits(bounded: ActorSystem) -> None:
    held = fresh_id("holder")
    bounded.stage(held, [Mutation("holder", "a", "early", b"1")], W, open=TxnOpen())
    for n in range(100):
        bounded.commit(fresh_id(f"ns{n}"), [Mutation(f"ns{n}", "a", "k", b"1")], W, open=TxnOpen())
    namespaces = {ns["namespace"]: ns for ns in (bounded.status(W), bounded.status(W))[1]["namespaces"]}
    assert namespaces["holder"]["state"] == "dormant"
    assert namespaces["holder"]["open_transactions"] == 1
    assert len([ns for ns in namespaces.values() if ns["state"] == "ok"]) <= 8
    assert bounded.gauges()["open_transactions"] == 1
    # The next call starts an actor that adopts the transaction, with what it staged.
    commit_ts = bounded.commit(held, [Mutation("holder", "a", "late", b"2")], W)
    assert [stored(bounded, "holder", key) for key in ("early", "late")] == [
        (b"1", commit_ts),
        (b"2", commit_ts),
    ]
    assert bounded.gauges()["open_transactions"] == 0


def test_threads_do_not_grow_with_namespaces_holding_transactions(store: Store) -> None:
    system = ActorSystem(store, ActorConfig(max_idle_actors=8)).start()
    try:
        held = {}
        for n in range(400):
            txn_id, _ = system.begin(f"held{n}", 600_000, W)
            system.stage(txn_id, [Mutation(f"held{n}", "a", "k", b"%d" % n)], W)
            held[f"held{n}"] = txn_id
        live = live_namespaces(system)
        assert len([ns for ns in system.status(W)["namespaces"] if ns["state"] == "ok"]) <= 8, live
        assert system.gauges()["open_transactions"] == 400
        threads = wait_for_actor_threads(lambda count: count <= 8 + 4)
        assert threads <= 8 + 4  # the bound, and the few asked but not yet gone
        for ns, txn_id in held.items():
            commit_ts = system.commit(txn_id, [Mutation(ns, "a", "j", b"2")], W)
            assert stored(system, ns, "k") == (ns[4:].encode(), commit_ts)
        assert system.gauges()["open_transactions"] == 0
    finally:
        system.stop()


def wait_for_actor_threads(done: Callable[[int], bool], timeout: float = 10.0) -> int:
    """The number of live namespace actor threads, once `done(count)` or after `timeout` s.

    A retired actor's thread ends after it has left the registry, so the count
    lags behind; this joins the finishing threads rather than sleeping."""
    deadline = time.monotonic() + timeout
    while True:
        threads = [t for t in namespace_actor_threads() if actor_namespace(t) is not None]
        if done(len(threads)) or time.monotonic() >= deadline:
            return len(threads)
        for thread in threads:
            thread.join(timeout=0.01)


def test_dormant_transactions_expire_on_time(store: Store) -> None:
    clock = FakeClock()
    config = ActorConfig(max_idle_actors=2, tick_seconds=3600, default_txn_timeout_ms=1000)
    system = ActorSystem(store, config, clock=clock).start()
    try:
        short, _ = system.begin("short", 1000, W)
        long, _ = system.begin("long", 600_000, W)
        for n in range(10):  # push both out of the bound
            system.commit(fresh_id(f"ns{n}"), [Mutation(f"ns{n}", "a", "k", b"1")], W, open=TxnOpen())
        states = {
            ns["namespace"]: ns["state"] for ns in (system.status(W), system.status(W))[1]["namespaces"]
        }
        assert states["short"] == states["long"] == "dormant"
        clock.now += 1.0
        system.tick_all(W)  # wakes "short", whose transaction is due, and expires it
        assert system.gauges()["open_transactions"] == 1  # "long" only: no call came for "short"
        with pytest.raises(TransactionExpired):
            system.commit(short, [Mutation("short", "a", "k", b"1")], W)
        assert system.commit(long, [Mutation("long", "a", "k", b"1")], W) > 0
        assert system.gauges()["open_transactions"] == 0
    finally:
        system.stop()


def race_commits(
    system: ActorSystem, namespaces: int, threads: int, per_thread: int, staged_every: int = 0
) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], Exception]]:
    """Threads committing one key per transaction round the namespaces; (acknowledged, failed).

    Transactions open with their commit (TxnOpen), as the SDK sends them;
    every `staged_every`-th is begun, staged and committed instead.
    """
    acknowledged: dict[tuple[str, str], int] = {}
    failed: dict[tuple[str, str], Exception] = {}
    start = threading.Barrier(threads)

    def agent(t: int) -> None:
        start.wait(W)
        for i in range(per_thread):
            ns, key = f"ns{(t * 7 + i) % namespaces}", f"t{t}-{i}"
            mutation = Mutation(ns, "a", key, key.encode())
            try:
                if staged_every and i % staged_every == 0:
                    # A server-issued id, staged first: its actor may retire meanwhile,
                    # leaving the transaction dormant for the next one.
                    txn_id, _ = system.begin(ns, None, W)
                    system.stage(txn_id, [mutation], W)
                    acknowledged[ns, key] = system.commit(txn_id, [], W)
                else:
                    acknowledged[ns, key] = system.commit(fresh_id(ns), [mutation], W, open=TxnOpen())
            except Exception as exc:
                failed[ns, key] = exc

    run_threads(agent, threads)
    return acknowledged, failed


def test_commits_racing_retirements_lose_nothing(store: Store) -> None:
    # max_idle_actors=2 over 24 busy namespaces: actors are asked to retire
    # all the time while messages are sent to them. Which races happen varies
    # from run to run; that every commit is acknowledged and readable must not:
    # an actor sent anything after it was asked to retire keeps serving.
    system = ActorSystem(store, ActorConfig(max_idle_actors=2)).start()
    try:
        acknowledged, failed = race_commits(system, namespaces=24, threads=16, per_thread=60, staged_every=3)
        assert failed == {}
        assert len(acknowledged) == 16 * 60
        assert len(set(acknowledged.values())) == len(acknowledged)
        for (ns, key), commit_ts in acknowledged.items():
            assert stored(system, ns, key) == (key.encode(), commit_ts)
    finally:
        system.stop()


def test_more_busy_namespaces_than_the_bound_all_commit(store: Store) -> None:
    system = ActorSystem(store, ActorConfig(max_idle_actors=8)).start()
    try:
        acknowledged, failed = race_commits(system, namespaces=32, threads=32, per_thread=60)
        assert failed == {}
        assert len(acknowledged) == 32 * 60
    finally:
        system.stop()


def daemon_threads(daemon: DaemonProcess) -> int:
    assert daemon.process is not None
    status = Path(f"/proc/{daemon.process.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Threads:")).split()[1])


def test_daemon_touching_many_namespaces_keeps_few_threads(data_dir: Path) -> None:
    with DaemonProcess(data_dir) as daemon, Statehouse(daemon.addr) as client:
        for n in range(300):
            with client.begin_transaction(namespace=f"ns{n}") as tx:
                tx.write("a", "k", n, namespace=f"ns{n}")
        assert daemon_threads(daemon) < 100
        assert [client.get_state("a", "k", namespace=f"ns{n}").value for n in range(300)] == list(range(300))


def test_daemon_holding_a_transaction_in_many_namespaces_keeps_few_threads(data_dir: Path) -> None:
    """The original contract's calls, as an agent that began a transaction and has not committed."""
    with DaemonProcess(data_dir) as daemon, grpc.insecure_channel(daemon.addr) as channel:
        stub = pb_grpc.StatehouseServiceStub(channel)
        held = []
        for n in range(300):
            ns = f"held{n}"
            txn_id = stub.BeginTransaction(pb.BeginTransactionRequest(namespace=ns), timeout=W).txn_id
            stub.Write(
                pb.WriteRequest(txn_id=txn_id, namespace=ns, agent_id="a", key="k", value_json=b"%d" % n)
            )
            held.append((ns, txn_id))
        assert daemon_threads(daemon) < 100
        commits = [stub.Commit(pb.CommitRequest(txn_id=txn_id), timeout=W).commit_ts for _, txn_id in held]
        assert len(set(commits)) == 300
        for n, (ns, _) in enumerate(held):
            read = stub.GetState(
                pb.GetStateRequest(namespace=ns, agent_id="a", key="k", json_values=True), timeout=W
            )
            assert (read.value_json, read.commit_ts) == (b"%d" % n, commits[n])


def test_starting_an_actor_asks_only_a_few_old_ones_to_retire() -> None:
    """With many actors that refuse to retire (busy), a new one must stay cheap: it asks a
    bounded number of the oldest, not every actor past the bound."""
    from actors.registry import NamespaceRegistry

    asked: list[str] = []

    class Holder:  # a live actor that is always busy: it never retires
        def __init__(self, namespace: str) -> None:
            self.namespace = namespace
            self.actor_ref = self

        def is_alive(self) -> bool:
            return True

        def retire_if_idle(self, uses: int) -> None:
            asked.append(self.namespace)

    registry = NamespaceRegistry(lambda ns, dormant: (Holder(ns), None), max_idle=8)
    for n in range(500):
        before = len(asked)
        registry.send(f"ns{n}", True, lambda proxy: None)
        assert len(asked) - before == min(max(0, n + 1 - 8), 4)  # past the bound: 4 at most
    assert len(registry) == 500
