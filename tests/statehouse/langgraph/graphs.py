"""Real LangGraph graphs for the adapter's tests, and a worker that runs them in a process of
its own (so that a test can SIGKILL it, or resume from another process):

    python tests/statehouse/langgraph/graphs.py ADDR steps THREAD N          run (or resume) the steps graph
    python tests/statehouse/langgraph/graphs.py ADDR approval-start THREAD   run until the approval interrupt
    python tests/statehouse/langgraph/graphs.py ADDR approval-resume THREAD ANSWER

It prints the final state as one JSON line.
"""

from __future__ import annotations

import json
import operator
import sys
import time
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from statehouse import Statehouse
from statehouse.langgraph import StatehouseSaver

EFFECTS_NAMESPACE = "effects"  # where the steps graph's nodes leave their side effects


class Steps(TypedDict):
    count: int
    log: Annotated[list[int], operator.add]


def steps_graph(client: Statehouse, n: int, pause: float = 0.0) -> Any:
    """N nodes in a row; node i adds 1 to `count`, appends i to `log`, and, as its side
    effect, writes `step-i` of the thread's agent in EFFECTS_NAMESPACE under an idempotency
    key (thread, i): a node run again after a crash finds its effect committed and writes
    nothing. `pause` makes each node take that long, so that a kill can land mid-run."""
    builder = StateGraph(Steps)

    def node(i: int) -> Any:
        def run(state: Steps, config: RunnableConfig) -> dict[str, Any]:
            thread = config["configurable"]["thread_id"]
            tx = client.begin_transaction(namespace=EFFECTS_NAMESPACE, idempotency_key=f"{thread}/{i}")
            tx.write(thread, f"step-{i}", {"step": i, "count_before": state["count"]})
            tx.write(thread, "progress", i)
            tx.commit()
            time.sleep(pause)  # the node's work
            return {"count": state["count"] + 1, "log": [i]}

        return run

    previous = START
    for i in range(n):
        builder.add_node(f"step_{i}", node(i))
        builder.add_edge(previous, f"step_{i}")
        previous = f"step_{i}"
    builder.add_edge(previous, END)
    return builder.compile(checkpointer=StatehouseSaver(client))


class Approval(TypedDict):
    request: str
    answer: str
    done: bool


def approval_graph(client: Statehouse) -> Any:
    """Draft, then ask a person (`interrupt`), then act on the answer."""
    builder = StateGraph(Approval)
    builder.add_node("draft", lambda state: {"request": f"send {state['request']}?"})
    builder.add_node("ask", lambda state: {"answer": interrupt(state["request"])})
    builder.add_node("act", lambda state: {"done": state["answer"] == "yes"})
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "ask")
    builder.add_edge("ask", "act")
    builder.add_edge("act", END)
    return builder.compile(checkpointer=StatehouseSaver(client))


def main(argv: list[str]) -> int:
    addr, mode, thread, *rest = argv
    config = {"configurable": {"thread_id": thread}}
    with Statehouse(addr, timeout=60) as client:
        if mode == "steps":
            graph = steps_graph(client, int(rest[0]), pause=float(rest[1]) if len(rest) > 1 else 0.0)
            # A thread with a checkpoint goes on from it: from the last step saved, with the
            # writes of the tasks that finished after it (and does nothing if it had ended).
            started = bool(graph.get_state(config).values)
            result = graph.invoke(None if started else {"count": 0, "log": []}, config)
        elif mode == "approval-start":
            result = approval_graph(client).invoke(
                {"request": "the report", "answer": "", "done": False}, config
            )
            result = {"interrupts": [i.value for i in result.get("__interrupt__", [])]}
        elif mode == "approval-resume":
            result = approval_graph(client).invoke(Command(resume=rest[0]), config)
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
