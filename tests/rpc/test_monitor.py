"""The operators' HTTP endpoint (/healthz, /readyz, /actors, /metrics) and the
standard grpc.health.v1 service, on real parts: RocksDB in a temp dir, real
actors, a real gRPC server and a real HTTP server on port 0.

Two faults cannot be caused for real here, a disk read that never returns
and an fsync that never returns; they are simulated by making the store's
method block on an event, and the tests say so where they do it.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from actors import ActorConfig, ActorSystem
from rpc.monitor import Monitor
from rpc.server import Daemon, DaemonConfig
from statehouse import ConflictError, NotFoundError, Statehouse
from statehouse._proto import statehouse_pb2 as pb
from statehouse._proto import statehouse_pb2_grpc as pb_grpc
from storage import Store

W = 10.0


def get(addr: str, path: str) -> tuple[int, bytes, str]:
    """(status, body, content type) of GET http://addr/path."""
    try:
        with urllib.request.urlopen(f"http://{addr}{path}", timeout=W) as answer:
            return answer.status, answer.read(), answer.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers["Content-Type"]


def actors(addr: str, timeout: float = 1.0) -> dict[str, Any]:
    status, body, content_type = get(addr, f"/actors?timeout={timeout}")
    assert status == 200 and content_type == "application/json", body
    report: dict[str, Any] = orjson.loads(body)
    return report


def metrics(addr: str) -> dict[str, float]:
    """Every sample of /metrics, by name with its labels: {'x_total{code="NOT_FOUND"}': 1.0}."""
    status, body, content_type = get(addr, "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version="), body
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


@pytest.fixture
def daemon_config(data_dir: Path, actor_config: ActorConfig) -> DaemonConfig:
    return DaemonConfig(data_dir=data_dir, addr="127.0.0.1:0", http_addr="127.0.0.1:0", actors=actor_config)


@pytest.fixture
def http(daemon: Daemon) -> str:
    assert daemon.monitor is not None
    return f"127.0.0.1:{daemon.monitor.port}"


@pytest.fixture
def stub(daemon: Daemon) -> Iterator[Any]:
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        yield pb_grpc.StatehouseServiceStub(channel)


def commit(client: Statehouse, namespace: str, agent: str = "a", key: str = "k", value: Any = 1) -> int:
    with client.begin_transaction(namespace=namespace) as tx:
        tx.write(agent, key, value)
    return tx.commit_ts  # type: ignore[return-value]


# -- liveness and readiness ----------------------------------------------------------------


def test_healthz_and_readyz_answer_while_serving(daemon: Daemon, http: str) -> None:
    assert get(http, "/healthz")[:2] == (200, b"ok\n")
    assert get(http, "/readyz")[:2] == (200, b"ready\n")
    assert daemon.monitor is not None
    daemon.monitor.shutting_down()  # what Daemon.stop() does first
    status, body, _ = get(http, "/readyz")
    assert (status, body) == (503, b"not ready: the daemon is shutting down\n")
    assert get(http, "/healthz")[0] == 200  # still alive while it stops


def test_unknown_paths_methods_and_timeouts_get_clear_errors(http: str) -> None:
    status, body, _ = get(http, "/nope")
    assert status == 404 and b"/healthz, /readyz, /actors, /metrics or /config" in body
    for bad in ("abc", "0", "-1", "31"):
        status, body, _ = get(http, f"/actors?timeout={bad}")
        assert status == 400 and b"timeout must be seconds" in body, bad
    request = urllib.request.Request(f"http://{http}/actors", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=W)
    assert refused.value.code == 405 and refused.value.headers["Allow"] == "GET"
    assert get(http, "/healthz")[0] == 200  # and it keeps serving


# -- /actors -------------------------------------------------------------------------------


def test_actors_shows_every_namespace_with_its_open_transactions(
    daemon: Daemon, http: str, client: Statehouse, stub: Any
) -> None:
    last = [commit(client, ns) for ns in ("alpha", "beta", "beta")][-1]
    # Two transactions left open in beta (begun over the old RPCs, which open at once).
    for _ in range(2):
        txn = stub.BeginTransaction(pb.BeginTransactionRequest(namespace="beta"), timeout=W).txn_id
        stub.Write(
            pb.WriteRequest(txn_id=txn, namespace="beta", agent_id="a", key="k", value_json=b"1"), timeout=W
        )
    report = actors(http)
    assert report["ledger"]["state"] == "ok"
    assert report["ledger"]["last_commit_ts"] == last
    assert report["ledger"]["commits_written"] == 3
    assert report["ledger"]["recent_group_sizes"] == [1, 1, 1]
    assert len(report["ledger"]["recent_sync_ms"]) == 3
    by_name = {ns["namespace"]: ns for ns in report["namespaces"]}
    assert list(by_name) == ["alpha", "beta"]  # sorted by name
    alpha, beta = by_name["alpha"], by_name["beta"]
    assert (alpha["state"], alpha["open_transactions"], alpha["commits"]) == ("ok", 0, 1)
    assert alpha["oldest_transaction_age_s"] is None
    assert (beta["state"], beta["open_transactions"], beta["commits"]) == ("ok", 2, 2)
    assert beta["oldest_transaction_age_s"] >= 0
    assert alpha["mailbox_depth"] == beta["mailbox_depth"] == 0
    assert report["live_actors"] == 2 and report["stuck_actors"] == 0
    assert report["daemon"]["ready"] is True


def test_actors_lists_open_watches(daemon: Daemon, http: str, client: Statehouse) -> None:
    with client.watch("agent-w", key_prefix="approval") as watch:
        commit(client, "default", "agent-w", "approval", True)
        event = next(iter(watch))
        assert event.operations[0].key == "approval"
        report = actors(http)
        (watcher,) = report["watches"]["watchers"]
        assert (watcher["agent_id"], watcher["key_prefix"]) == ("agent-w", "approval")
        assert report["watches"]["open"] == 1
        assert metrics(http)["statehouse_watchers"] == 1


@contextlib.contextmanager
def serving(
    store: Store, monitor_options: dict[str, Any] | None = None, **options: Any
) -> Iterator[tuple[ActorSystem, str]]:
    """Real actors over `store` and the HTTP endpoint on a free port; stopped, and the store closed, after."""
    system = ActorSystem(store, **options).start()
    monitor = Monitor(system, "127.0.0.1:0", **(monitor_options or {})).start()
    try:
        yield system, f"127.0.0.1:{monitor.port}"
    finally:
        monitor.stop()
        system.stop()
        store.close()


def _blocking(
    gate: threading.Event, entered: threading.Event, inner: Callable[..., Any]
) -> Callable[..., Any]:
    def blocked(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        assert gate.wait(W * 3), "the test never released the gate"
        return inner(*args, **kwargs)

    return blocked


def test_a_stuck_namespace_actor_shows_as_stuck_and_stalls_nobody_else(data_dir: Path) -> None:
    store = Store.open(data_dir)
    gate, entered = threading.Event(), threading.Event()
    real_lookup = store.commit_ts_of

    def lookup(txn_id: str) -> int | None:
        # Simulated fault: a disk read that hangs, for namespace "stuck" only: the namespace
        # actor's check, when a chunk sent ahead opens a transaction, that its id is unused.
        if txn_id.startswith("stuck:"):
            entered.set()
            assert gate.wait(W * 3)
        return real_lookup(txn_id)

    store.commit_ts_of = lookup  # type: ignore[method-assign]
    results: list[Any] = []
    with serving(store) as (system, http):
        commit_ts = _commit_in_thread(system, "free")
        stuck = threading.Thread(target=lambda: results.append(_stage_then_commit(system, "stuck")))
        stuck.start()
        try:
            assert entered.wait(W)
            # A second message queued behind the stuck one: its sender gives up, the message stays.
            with pytest.raises(Exception, match="did not answer before the request deadline"):
                system.abort("stuck:" + "0" * 24, 0.05)

            # 2 s for each actor to answer: the free one does, however loaded the machine.
            report = actors(http, timeout=2.0)
            assert report["answered_in_ms"] < W * 1000  # it answered, without waiting for the stuck actor
            by_name = {ns["namespace"]: ns for ns in report["namespaces"]}
            assert by_name["stuck"]["state"] == "stuck"
            assert by_name["stuck"]["mailbox_depth"] == 1
            assert by_name["stuck"]["open_transactions"] == 0  # published before it stuck
            assert by_name["stuck"]["idle_s"] >= 0
            assert by_name["free"]["state"] == "ok"
            assert report["stuck_actors"] == 1 and report["ledger"]["state"] == "ok"
            # Commits elsewhere go on meanwhile, and /readyz (which asks the ledger) is ready.
            assert _commit_in_thread(system, "free") == commit_ts + 1
            assert get(http, "/readyz")[0] == 200
        finally:
            gate.set()
            stuck.join(W)
    assert results == [commit_ts + 2]  # the stuck commit completed once released


def test_a_stuck_ledger_shows_as_stuck_and_the_daemon_is_not_ready(data_dir: Path) -> None:
    store = Store.open(data_dir)
    gate, entered = threading.Event(), threading.Event()
    # Simulated fault: an fsync that hangs (the ledger's synced write blocks).
    store.append = _blocking(gate, entered, store.append)  # type: ignore[method-assign]
    with serving(store, {"ready_timeout": 0.2}) as (system, http):
        committers = [threading.Thread(target=_commit_in_thread, args=(system, f"ns{i}")) for i in range(3)]
        try:
            committers[0].start()
            assert entered.wait(W)
            for thread in committers[1:]:
                thread.start()
            _until(lambda: system.gauges()["ledger_queue_depth"] >= 1, "a commit waits behind the stuck one")
            report = actors(http, timeout=0.2)
            assert report["ledger"]["state"] == "stuck"
            assert report["ledger"]["last_commit_ts"] == 0
            assert report["ledger"]["queue_depth"] >= 1
            assert report["stuck_actors"] >= 1
            assert report["daemon"]["ready"] is False  # from this answer: no second wait for the ledger
            status, body, _ = get(http, "/readyz")
            assert status == 503 and body == b"not ready: the ledger did not answer within 0.2 s\n"
            assert get(http, "/healthz")[0] == 200
        finally:
            gate.set()
            for thread in committers:
                thread.join(W)
        assert get(http, "/readyz")[0] == 200
        assert actors(http)["ledger"]["last_commit_ts"] == 3


def _commit_in_thread(system: ActorSystem, namespace: str) -> int:
    from actors import Mutation, TxnOpen

    txn_id = f"{namespace}:{secrets.token_hex(12)}"
    return system.commit(txn_id, [Mutation(namespace, "a", "k", b"1")], W, TxnOpen(None))


def _stage_then_commit(system: ActorSystem, namespace: str) -> int:
    """A transaction opened by a chunk sent ahead (Stage), then committed."""
    from actors import Mutation, TxnOpen

    txn_id = f"{namespace}:{secrets.token_hex(12)}"
    system.stage(txn_id, [Mutation(namespace, "a", "k", b"1")], W, TxnOpen(None))
    return system.commit(txn_id, [], W)


def _until(condition: Callable[[], bool], what: str) -> None:
    """Wait for a state the daemon reaches on its own (bounded; fails loudly)."""
    deadline = time.monotonic() + W
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.001)


# -- /metrics ------------------------------------------------------------------------------


def test_metrics_count_commits_aborts_conflicts_and_errors_by_code(
    http: str, client: Statehouse, stub: Any
) -> None:
    for _ in range(5):
        commit(client, "m")
    with client.begin_transaction(namespace="m"):
        pass  # an empty commit: acknowledged, but it writes nothing and is not counted
    txn = stub.BeginTransaction(pb.BeginTransactionRequest(namespace="m"), timeout=W).txn_id
    stub.Abort(pb.AbortRequest(txn_id=txn), timeout=W)
    with pytest.raises(ConflictError):
        with client.begin_transaction(namespace="m") as tx:
            tx.write("a", "k", 2, expected_version=1)  # it is at version 5
    with pytest.raises(NotFoundError):
        client.get_state_at_version("a", "k", 99)
    with pytest.raises(grpc.RpcError):
        stub.GetState(pb.GetStateRequest(namespace="m", agent_id="", key="k"), timeout=W)
    samples = metrics(http)
    assert samples["statehouse_commits_total"] == 5
    assert samples["statehouse_aborts_total"] == 1
    assert samples["statehouse_conflicts_total"] == 1
    assert samples["statehouse_expiries_total"] == 0
    assert samples['statehouse_rpc_errors_total{code="ABORTED"}'] == 1
    assert samples['statehouse_rpc_errors_total{code="NOT_FOUND"}'] == 1
    assert samples['statehouse_rpc_errors_total{code="INVALID_ARGUMENT"}'] == 1
    # One observation per commit and per synced write; group sizes add up to the commits.
    assert samples["statehouse_commit_latency_seconds_count"] == 5
    assert samples["statehouse_commit_latency_seconds_sum"] > 0
    assert samples['statehouse_commit_latency_seconds_bucket{le="+Inf"}'] == 5
    assert samples["statehouse_fsync_latency_seconds_count"] == 5
    assert samples["statehouse_group_commit_size_sum"] == 5
    assert samples["statehouse_last_commit_ts"] == 5
    assert samples["statehouse_live_actors"] == 1
    assert samples["statehouse_open_transactions"] == 0
    assert samples["statehouse_ledger_queue_depth"] == 0
    assert samples["statehouse_rocksdb_size_bytes"] > 0
    assert samples["process_resident_memory_bytes"] > 0


@pytest.mark.parametrize("actor_config", [ActorConfig(watch_max_events=2)])
def test_a_watcher_cut_off_is_counted(http: str, client: Statehouse, stub: Any) -> None:
    request = pb.WatchRequest(namespace="default", agent_id="slow", json_values=True)
    stream = stub.Watch(request, timeout=60)
    next(stream)  # registered; it reads nothing more while commits pile up
    assert metrics(http)["statehouse_watch_cutoffs_total"] == 0
    # Big values fill the stream's flow-control window; then events wait in the daemon.
    commits = 0
    while not metrics(http)["statehouse_watch_cutoffs_total"]:
        assert commits < 2000, "never cut off: the daemon buffered without bound"
        commit(client, "default", "slow", "k", "x" * 100_000)
        commits += 1
    assert commits > 2  # it took more than the bound of 2 waiting events
    assert metrics(http)["statehouse_watch_cutoffs_total"] == 1
    assert actors(http)["watches"]["cut_offs"] == 1
    stream.cancel()


def test_metrics_gauge_open_transactions_and_count_expiries(data_dir: Path) -> None:
    now = [1000.0]
    config = ActorConfig(default_txn_timeout_ms=1000)
    with serving(Store.open(data_dir), config=config, clock=lambda: now[0]) as (system, http):
        for namespace in ("x", "x", "y"):
            system.begin(namespace, None, W)
        samples = metrics(http)
        assert samples["statehouse_open_transactions"] == 3
        assert samples["statehouse_live_actors"] == 2
        now[0] += 1.5  # past every transaction's timeout
        system.tick_all(wait=W)
        samples = metrics(http)
        assert samples["statehouse_open_transactions"] == 0
        assert samples["statehouse_expiries_total"] == 3


# -- grpc.health.v1 -------------------------------------------------------------------------


def test_grpc_health_serves_then_says_not_serving_and_ends_its_watches_at_shutdown(
    daemon_config: DaemonConfig,
) -> None:
    # A long grace period: if watch streams held the server, stopping would take it all.
    config = DaemonConfig(**{**daemon_config.__dict__, "shutdown_grace_seconds": 120.0})
    daemon = Daemon(config).start()
    seen: list[Any] = []
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "statehouse.v1.StatehouseService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=W)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        first = threading.Event()

        def follow() -> None:
            for response in health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=300):
                seen.append(response.status)
                first.set()
            seen.append("end")

        watcher = threading.Thread(target=follow)
        watcher.start()
        assert first.wait(W)
        started = time.monotonic()
        daemon.stop()
        stopped_in = time.monotonic() - started
        watcher.join(W)
    assert seen == [health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING, "end"]
    assert stopped_in < 60, f"stopping took {stopped_in:.1f} s: a watch stream held the server"
