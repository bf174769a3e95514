"""The blocking facade in tests/facade.py, which runs one test body against both clients.

`Blocking` drives an `AsyncStatehouse` (and what it returns: transactions,
watches, replay iterators) from plain blocking code, through one event loop
running in a background thread. `SDK` makes clients of either kind; the
test modules parametrize a fixture over `SDK.KINDS` (`sdk` in conftest.py).
The tests here check the facade itself.
"""

from __future__ import annotations

import pytest
from facade import SDK, Blocking, LoopThread

import statehouse
from rpc.server import Daemon
from statehouse import AsyncStatehouse

# -- the facade itself ---------------------------------------------------------


def test_blocking_drives_coroutines_iterators_and_context_managers(
    daemon: Daemon, loop_thread: LoopThread
) -> None:
    sdk = SDK("async", f"127.0.0.1:{daemon.port}", loop_thread)
    try:
        client = sdk.client
        assert isinstance(client, Blocking) and isinstance(client._target, AsyncStatehouse)
        assert client.health() == "ok"
        with client.begin_transaction() as tx:
            assert isinstance(tx._target, statehouse.AsyncTransaction)
            tx.write("a", "k", 1)
        assert tx.commit_ts == 1
        events = list(client.replay("a"))
        assert [e.commit_ts for e in events] == [1]
        with pytest.raises(statehouse.NotFoundError):
            client.get_state_at_version("a", "k", 2)
        with pytest.raises(RuntimeError, match="boom"):
            with client.begin_transaction() as tx:
                tx.write("a", "k", 2)
                raise RuntimeError("boom")
        assert tx._target._state == "aborted"
        assert client.get_state("a", "k").version == 1
    finally:
        sdk.close()
