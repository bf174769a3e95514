"""actors/registry.py: the bound on live namespace actors. Idle ones past it retire, those
holding a transaction never do, commits racing retirements lose nothing, and a daemon that
touches many namespaces keeps few threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_fast_path import W, fresh_id, stored
from threads import run_threads

from actors import ActorConfig, ActorSystem, Mutation, TransactionClosed, TxnOpen
from statehouse import Statehouse
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


def test_actor_with_an_open_transaction_is_never_retired_by_the_bound(bounded: ActorSystem) -> None:
    held = fresh_id("holder")
    bounded.stage(held, [Mutation("holder", "a", "early", b"1")], W, open=TxnOpen())
    for n in range(100):
        bounded.commit(fresh_id(f"ns{n}"), [Mutation(f"ns{n}", "a", "k", b"1")], W, open=TxnOpen())
    live = live_namespaces(bounded)
    assert "holder" in live
    assert len(live) <= 9, live  # the holder refuses; the rest as without it
    commit_ts = bounded.commit(held, [Mutation("holder", "a", "late", b"2")], W)
    assert [stored(bounded, "holder", key) for key in ("early", "late")] == [
        (b"1", commit_ts),
        (b"2", commit_ts),
    ]


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
                    # A server-issued id, staged first: its actor cannot retire meanwhile.
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


def test_daemon_touching_many_namespaces_keeps_few_threads(data_dir: Path) -> None:
    with DaemonProcess(data_dir) as daemon, Statehouse(daemon.addr) as client:
        for n in range(300):
            with client.begin_transaction(namespace=f"ns{n}") as tx:
                tx.write("a", "k", n, namespace=f"ns{n}")
        assert daemon.process is not None
        status = Path(f"/proc/{daemon.process.pid}/status").read_text()
        threads = int(next(line for line in status.splitlines() if line.startswith("Threads:")).split()[1])
        assert threads < 100, threads
        assert [client.get_state("a", "k", namespace=f"ns{n}").value for n in range(300)] == list(range(300))


def test_starting_an_actor_asks_only_a_few_old_ones_to_retire() -> None:
    """With many actors that cannot retire (open transactions), a new one must stay cheap:
    it asks a bounded number of the oldest, not every actor past the bound."""
    from actors.registry import NamespaceRegistry

    asked: list[str] = []

    class Holder:  # a live actor that holds a transaction open: it never retires
        def __init__(self, namespace: str) -> None:
            self.namespace = namespace
            self.actor_ref = self

        def is_alive(self) -> bool:
            return True

        def retire_if_idle(self, uses: int) -> None:
            asked.append(self.namespace)

    registry = NamespaceRegistry(lambda ns: (Holder(ns), None), max_idle=8)
    for n in range(500):
        before = len(asked)
        registry.send(f"ns{n}", True, lambda proxy: None)
        assert len(asked) - before == min(max(0, n + 1 - 8), 4)  # past the bound: 4 at most
    assert len(registry) == 500


def test_actors_holding_transactions_do_not_shield_idle_ones_from_retiring() -> None:
    """Past the bound, a new actor asks idle actors to retire, passing over (without a message)
    those that publish open transactions, however many of those are older."""
    from actors.namespace import Activity
    from actors.registry import NamespaceRegistry

    asked: list[str] = []
    registry: NamespaceRegistry

    class Actor:
        def __init__(self, namespace: str) -> None:
            self.namespace = namespace
            self.actor_ref = self
            self.actor_urn = namespace
            self.uses = 0

        def is_alive(self) -> bool:
            return True

        def retire_if_idle(self, uses: int) -> None:  # idle: it retires at once
            asked.append(self.namespace)
            registry._forget(self.namespace)  # what `retire` does, under the lock held by `send`

    def start(namespace: str) -> tuple[Actor, Activity]:
        activity = Activity(0.0)
        activity.open_transactions = 1 if namespace.startswith("held") else 0
        return Actor(namespace), activity

    registry = NamespaceRegistry(start, max_idle=8)
    for n in range(200):  # 200 namespaces holding a transaction each
        registry.send(f"held{n}", True, lambda proxy: None)
    assert asked == []  # none of them is ever asked: they would refuse
    for n in range(300):  # then 300 fresh ones, each touched once
        registry.send(f"touched{n}", True, lambda proxy: None)
    assert all(name.startswith("touched") for name in asked)
    live = [name for name in registry._actors if name.startswith("touched")]
    assert len(live) <= 8 + 64, len(live)  # the idle ones retire as new ones start
    assert len(registry) == 200 + len(live)
