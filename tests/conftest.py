"""Fixtures on real parts: RocksDB in a temp dir, real actors, a real gRPC
server on port 0, and the real SDK talking to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from facade import SDK, LoopThread

from actors import ActorConfig, ActorSystem
from rpc import logs
from rpc.server import Daemon, DaemonConfig
from statehouse import Statehouse
from storage import Store

logs.configure("warning", "console")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(data_dir: Path) -> Iterator[Store]:
    store = Store.open(data_dir)
    yield store
    store.close()


@pytest.fixture
def actor_config() -> ActorConfig:
    return ActorConfig()


@pytest.fixture
def system(store: Store, actor_config: ActorConfig) -> Iterator[ActorSystem]:
    system = ActorSystem(store, actor_config).start()
    yield system
    system.stop()


@pytest.fixture
def daemon_config(data_dir: Path, actor_config: ActorConfig) -> DaemonConfig:
    return DaemonConfig(data_dir=data_dir, addr="127.0.0.1:0", actors=actor_config)


@pytest.fixture
def daemon(daemon_config: DaemonConfig) -> Iterator[Daemon]:
    daemon = Daemon(daemon_config).start()
    yield daemon
    daemon.stop()


@pytest.fixture
def client(daemon: Daemon) -> Iterator[Statehouse]:
    with Statehouse(f"127.0.0.1:{daemon.port}") as client:
        yield client


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    """An event loop in a thread, for the async client behind the blocking facade."""
    loop = LoopThread()
    yield loop
    loop.close()


@pytest.fixture(params=SDK.KINDS)
def sdk(request: pytest.FixtureRequest, daemon: Daemon, loop_thread: LoopThread) -> Iterator[SDK]:
    """Clients of each kind, sync and async (through the facade), on the `daemon` fixture."""
    sdk = SDK(request.param, f"127.0.0.1:{daemon.port}", loop_thread)
    yield sdk
    sdk.close()
