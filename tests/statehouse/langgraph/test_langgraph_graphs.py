"""Real LangGraph graphs on StatehouseSaver against a real daemon: crashes of the graph's
process and of the daemon, a human approval across processes, time travel, subgraphs, and the
async saver under 32 concurrent threads."""

from __future__ import annotations

import asyncio
import json
import operator
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from graphs import EFFECTS_NAMESPACE, approval_graph, steps_graph
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from rpc.server import Daemon
from statehouse import AsyncStatehouse, DeadlineExceededError, Statehouse
from statehouse.langgraph import AsyncStatehouseSaver, StatehouseSaver, interrupted
from statehouse.testing import DaemonProcess

WORKER = Path(__file__).with_name("graphs.py")
WAIT = 60.0


def worker(addr: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), addr, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finished(process: subprocess.Popen[str]) -> Any:
    out, err = process.communicate(timeout=WAIT)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def assert_each_step_once(client: Statehouse, thread: str, n: int) -> None:
    """Every node's side effect is in the store exactly once: one version of each key."""
    for i in range(n):
        effect = client.get_state(thread, f"step-{i}", namespace=EFFECTS_NAMESPACE)
        assert (effect.version, effect.value["step"]) == (1, i)


def test_a_graph_killed_mid_run_resumes_in_a_fresh_process_with_each_step_once(daemon: Daemon) -> None:
    addr, n = f"127.0.0.1:{daemon.port}", 12
    with Statehouse(addr) as client:
        first = worker(addr, "steps", "killed", str(n), "0.05")
        try:
            client.wait_for(
                "killed", "progress", lambda step: step >= 5, namespace=EFFECTS_NAMESPACE, timeout=WAIT
            )
            first.send_signal(signal.SIGKILL)
        finally:
            first.wait(WAIT)
        assert first.returncode == -signal.SIGKILL
        cut = client.get_state("killed", "progress", namespace=EFFECTS_NAMESPACE).value
        assert 5 <= cut < n - 1  # it really stopped mid-run
        result = finished(worker(addr, "steps", "killed", str(n)))
        assert result == {"count": n, "log": list(range(n))}
        assert_each_step_once(client, "killed", n)


def test_a_daemon_killed_and_restarted_mid_run_costs_a_pause_not_the_work(tmp_path: Path) -> None:
    data_dir, n = tmp_path / "data", 10
    first = DaemonProcess(data_dir).start()
    addr = first.addr
    outcome: dict[str, Any] = {}
    try:
        with Statehouse(addr, timeout=WAIT) as client:
            graph = steps_graph(client, n, pause=0.05)
            config = {"configurable": {"thread_id": "through-a-restart"}}

            def run() -> None:
                try:
                    outcome["result"] = graph.invoke({"count": 0, "log": []}, config)
                except Exception as exc:  # reported below
                    outcome["error"] = exc

            runner = threading.Thread(target=run)
            runner.start()
            client.wait_for("through-a-restart", "progress", lambda s: s >= 3, namespace=EFFECTS_NAMESPACE)
            first.kill()
            with DaemonProcess(data_dir, "--addr", addr):  # the same address: the SDK retries on to it
                runner.join(WAIT)
                assert not runner.is_alive()
                assert "error" not in outcome, outcome
                assert outcome["result"] == {"count": n, "log": list(range(n))}
                assert_each_step_once(client, "through-a-restart", n)
    finally:
        first.kill()


def test_an_interrupt_answered_from_another_process(daemon: Daemon) -> None:
    addr = f"127.0.0.1:{daemon.port}"
    config = {"configurable": {"thread_id": "approval"}}
    waited: list[Any] = []
    with Statehouse(addr) as client:
        saver = StatehouseSaver(client)
        # A person's console, waiting (on Statehouse's watch) for the graph to ask.
        waiter = threading.Thread(
            target=lambda: waited.append(saver.wait_for_state(config, interrupted, timeout=WAIT))
        )
        waiter.start()
        asked = finished(worker(addr, "approval-start", "approval"))
        waiter.join(WAIT)
    assert asked == {"interrupts": ["send the report?"]}
    [(_task, _channel, [question])] = [w for w in waited[0].pending_writes if w[1] == "__interrupt__"]
    assert question.value == "send the report?"
    done = finished(worker(addr, "approval-resume", "approval", "yes"))
    assert done == {"request": "send the report?", "answer": "yes", "done": True}
    with Statehouse(addr) as client:
        graph = approval_graph(client)
        state = graph.get_state({"configurable": {"thread_id": "approval"}})
        assert state.next == () and state.values["done"] is True


def test_history_and_time_travel(daemon: Daemon) -> None:
    with Statehouse(f"127.0.0.1:{daemon.port}") as client:
        graph = steps_graph(client, 4)
        config = {"configurable": {"thread_id": "travel"}}
        assert graph.invoke({"count": 0, "log": []}, config) == {"count": 4, "log": [0, 1, 2, 3]}
        history = list(graph.get_state_history(config))
        assert [h.values.get("count") for h in history] == [4, 3, 2, 1, 0, None]  # newest first
        # Back to the checkpoint after two steps, and on from there: the same ending, a new branch.
        after_two = next(h for h in history if h.values.get("count") == 2)
        assert graph.invoke(None, after_two.config) == {"count": 4, "log": [0, 1, 2, 3]}
        # A fork: change the past, run on.
        forked = graph.update_state(after_two.config, {"count": 100})
        assert graph.invoke(None, forked)["count"] == 102
        assert len(list(graph.get_state_history(config))) > len(history)


class Outer(TypedDict):
    items: Annotated[list[str], operator.add]


class Inner(TypedDict):
    items: Annotated[list[str], operator.add]


def test_subgraphs_keep_their_own_checkpoint_namespace(daemon: Daemon) -> None:
    with Statehouse(f"127.0.0.1:{daemon.port}") as client:
        inner = StateGraph(Inner)
        inner.add_node("pick", lambda state: {"items": [interrupt("which?")]})
        inner.add_edge(START, "pick")
        inner.add_edge("pick", END)
        outer = StateGraph(Outer)
        outer.add_node("start", lambda state: {"items": ["start"]})
        outer.add_node("inner", inner.compile())
        outer.add_edge(START, "start")
        outer.add_edge("start", "inner")
        outer.add_edge("inner", END)
        saver = StatehouseSaver(client)
        graph = outer.compile(checkpointer=saver)
        config = {"configurable": {"thread_id": "nested"}}
        graph.invoke({"items": []}, config)
        state = graph.get_state(config, subgraphs=True)
        (task,) = state.tasks
        assert task.state is not None and task.state.config["configurable"]["checkpoint_ns"].startswith(
            "inner:"
        )
        namespaces = {t.config["configurable"]["checkpoint_ns"] for t in saver.list(config)}
        assert "" in namespaces and any(ns.startswith("inner:") for ns in namespaces)
        assert graph.invoke(Command(resume="tea"), config) == {"items": ["start", "start", "tea"]}


def test_the_async_saver_under_astream_with_32_concurrent_threads(daemon: Daemon) -> None:
    class Count(TypedDict):
        count: int

    async def main() -> list[int]:
        async with AsyncStatehouse(f"127.0.0.1:{daemon.port}") as client:
            builder = StateGraph(Count)
            for i in range(5):
                builder.add_node(f"n{i}", lambda state: {"count": state["count"] + 1})
                builder.add_edge(START if i == 0 else f"n{i - 1}", f"n{i}")
            builder.add_edge("n4", END)
            graph = builder.compile(checkpointer=AsyncStatehouseSaver(client))

            async def one(thread: int) -> int:
                config = {"configurable": {"thread_id": f"async-{thread}"}}
                chunks = [c async for c in graph.astream({"count": thread}, config)]
                assert len(chunks) == 5
                return (await graph.aget_state(config)).values["count"]

            saver = graph.checkpointer
            assert isinstance(saver, AsyncStatehouseSaver)
            # Waiting for a thread that another task runs, on the watch.
            waiting = asyncio.ensure_future(
                saver.await_for_state(
                    {"configurable": {"thread_id": "async-7"}},
                    lambda t: t.checkpoint["channel_values"].get("count") == 12,
                    timeout=WAIT,
                )
            )
            counts = await asyncio.gather(*(one(t) for t in range(32)))
            assert (await waiting).metadata["step"] == 5
            with pytest.raises(DeadlineExceededError):
                await saver.await_for_state(
                    {"configurable": {"thread_id": "async-7"}}, lambda t: False, timeout=0.2
                )
            return counts

    assert asyncio.run(main()) == [t + 5 for t in range(32)]
