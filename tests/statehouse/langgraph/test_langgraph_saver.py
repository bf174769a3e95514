"""StatehouseSaver beyond the conformance suite: what a review found at the edges."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langgraph.checkpoint.base import CheckpointTuple
from langgraph.checkpoint.conformance.test_utils import (
    generate_checkpoint,
    generate_config,
    generate_metadata,
)

from rpc.server import Daemon
from statehouse import AsyncStatehouse, Statehouse
from statehouse.langgraph import AsyncStatehouseSaver, StatehouseSaver, interrupted
from statehouse.langgraph._calls import run


def put(saver: StatehouseSaver, thread: str, ns: str = "", parent: Any = None, **values: Any) -> Any:
    config = generate_config(thread, checkpoint_ns=ns)
    if parent is not None:
        config["configurable"]["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
    versions = {channel: saver.get_next_version(None, None) for channel in values}
    checkpoint = generate_checkpoint(channel_values=values, channel_versions=versions)
    return saver.put(config, checkpoint, generate_metadata(run_id=f"run-{thread}"), versions)


def test_clean_up_never_takes_the_values_of_a_checkpoint_put_meanwhile(daemon: Daemon) -> None:
    with Statehouse(f"127.0.0.1:{daemon.port}") as client:
        saver = StatehouseSaver(client)
        first = put(saver, "busy", a=1)
        put(saver, "busy", parent=first, a=2)
        # The clean-up of unused values, stopped after its first read; a graph step lands then.
        plan = saver._drop_unused_blobs("busy")
        call = next(plan)
        newest = put(saver, "busy", parent=first, b="new")
        answer = call.run(client)
        try:
            while True:
                answer = plan.send(answer).run(client)
        except StopIteration:
            pass
        assert saver.get_tuple(newest).checkpoint["channel_values"] == {"b": "new"}  # type: ignore[union-attr]


def test_prune_keeping_the_latest_leaves_no_pointer_or_marker_to_what_went(daemon: Daemon) -> None:
    with Statehouse(f"127.0.0.1:{daemon.port}") as client:
        saver = StatehouseSaver(client)
        first = put(saver, "pruned", a=1)
        last = put(saver, "pruned", parent=first, a=2)
        saver.prune(["pruned"])
        kept = saver.get_tuple({"configurable": {"thread_id": "pruned", "checkpoint_ns": ""}})
        assert (
            kept is not None
            and kept.config["configurable"]["checkpoint_id"] == last["configurable"]["checkpoint_id"]
        )
        assert kept.parent_config is None
        assert kept.checkpoint["channel_values"] == {"a": 2}
        assert [k.split("/")[0] for k in client.list_keys("pruned", namespace="langgraph")] == [
            "blob",
            "checkpoint",
            "run",
        ]  # one value, one checkpoint, and the marker of the run that wrote it


def test_listing_across_checkpoint_namespaces_is_newest_first(daemon: Daemon) -> None:
    with Statehouse(f"127.0.0.1:{daemon.port}") as client:
        saver = StatehouseSaver(client)
        for n in range(6):
            put(saver, "nested", ns="child:1" if n % 2 else "", n=n)
        listed = list(saver.list({"configurable": {"thread_id": "nested"}}))
        ids = [t.config["configurable"]["checkpoint_id"] for t in listed]
        assert ids == sorted(ids, reverse=True)
        assert [t.checkpoint["channel_values"]["n"] for t in listed] == [5, 4, 3, 2, 1, 0]
        assert len(list(saver.list({"configurable": {"thread_id": "nested"}}, limit=3))) == 3


def test_one_string_is_not_a_list_of_ids(daemon: Daemon) -> None:
    with Statehouse(f"127.0.0.1:{daemon.port}") as client:
        saver = StatehouseSaver(client)
        with pytest.raises(TypeError, match="list of ids"):
            saver.prune("12")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="list of ids"):
            saver.delete_for_runs("run-1")  # type: ignore[arg-type]


def test_an_answered_interrupt_is_not_waiting() -> None:
    config = generate_config("t")
    asked = CheckpointTuple(
        config, generate_checkpoint(), generate_metadata(), None, [("task", "__interrupt__", [])]
    )
    answered = asked._replace(pending_writes=[*asked.pending_writes, ("00000000", "__resume__", "yes")])
    assert interrupted(asked) and not interrupted(answered)


def test_the_async_saver_refuses_blocking_calls_when_its_loop_is_not_running(daemon: Daemon) -> None:
    loop = asyncio.new_event_loop()
    try:
        aclient = loop.run_until_complete(_client(f"127.0.0.1:{daemon.port}"))
        saver = AsyncStatehouseSaver(aclient)
        config = generate_config("stopped-loop")
        loop.run_until_complete(saver.aput(config, generate_checkpoint(), generate_metadata(), {}))
        with pytest.raises(RuntimeError, match="not running"):
            saver.get_tuple(config)
        loop.run_until_complete(aclient.close())
    finally:
        loop.close()


async def _client(url: str) -> AsyncStatehouse:
    return AsyncStatehouse(url)


def test_the_plan_driver_hands_errors_to_the_plan(daemon: Daemon) -> None:
    from statehouse import InvalidArgumentError
    from statehouse.langgraph._calls import Purge

    def plan() -> Any:
        try:
            yield Purge("default", "")  # no agent: the SDK refuses it
        except InvalidArgumentError:
            return "caught"
        return "not raised"

    with Statehouse(f"127.0.0.1:{daemon.port}") as client:
        assert run(client, plan()) == "caught"
