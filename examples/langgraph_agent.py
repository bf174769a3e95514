"""A LangGraph travel agent on Statehouse: tools, a human approval, a crash, and its history.

    .venv/bin/python examples/langgraph_agent.py [--addr HOST:PORT] [--thread NAME]

The agent is a LangGraph graph whose checkpointer is `StatehouseSaver`. Its
chat model is langchain-core's `GenericFakeChatModel` playing a fixed
script (offline, no API key): search flights, then book the cheapest. Booking
needs a person's approval, asked with `interrupt()`.

The script plays the whole story, each part in a process of its own:

1. a process runs the agent until it asks for approval, and exits;
2. another process gives the approval; while the booking tool calls the
   "airline" (it takes a few seconds), this script kills that process with
   SIGKILL;
3. a fresh process resumes the thread from its last checkpoint and
   finishes. The booking tool runs again, but its reservation is committed
   with an idempotency key, so it is made exactly once;
4. the thread's history is printed from Statehouse: its checkpoints, and
   the commits of its event log.

Run one part alone with `--part ask|approve|resume|history` (the others
run as subprocesses of the whole story).
"""

from __future__ import annotations

import argparse
import operator
import os
import signal
import subprocess
import sys
import time
from typing import Annotated, Any, TypedDict

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode
from langgraph.types import Command, interrupt

from statehouse import Statehouse
from statehouse.langgraph import StatehouseSaver, interrupted

BOOKINGS = "bookings"  # the namespace where the airline keeps its reservations
CALLS = "airline-calls"  # and where it counts the calls it got

FLIGHTS = {"LH1234": 420, "AF5678": 385, "KL9012": 510}

# What the fake model says, turn by turn: the n-th AI message of the conversation is SCRIPT[n].
SCRIPT = [
    AIMessage(content="", tool_calls=[{"name": "search_flights", "args": {"to": "Lisbon"}, "id": "call-1"}]),
    AIMessage(content="", tool_calls=[{"name": "book_flight", "args": {"flight": "AF5678"}, "id": "call-2"}]),
    AIMessage(content="Booked: AF5678 to Lisbon for 385 EUR. Have a good trip!"),
]


class Trip(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    log: Annotated[list[str], operator.add]


def build(client: Statehouse) -> Any:
    @tool
    def search_flights(to: str) -> str:
        """Flights to a city, with their prices in EUR."""
        return ", ".join(f"{flight} {price} EUR" for flight, price in sorted(FLIGHTS.items()))

    @tool
    def book_flight(flight: str, config: RunnableConfig) -> str:
        """Reserve a seat on a flight; the airline takes a few seconds to confirm."""
        thread = config["configurable"]["thread_id"]
        print(f"  calling the airline to book {flight} ...", flush=True)
        calls = client.get_state(thread, flight, namespace=CALLS).version
        tx = client.begin_transaction(namespace=CALLS)
        tx.write(thread, flight, calls + 1)
        tx.commit()
        # The reservation, once: a redo after a crash finds it committed and writes nothing.
        tx = client.begin_transaction(namespace=BOOKINGS, idempotency_key=f"{thread}/{flight}")
        tx.write(thread, flight, {"flight": flight, "price_eur": FLIGHTS[flight]})
        tx.commit()
        time.sleep(3)  # the airline confirms slowly: the window in which the story kills this process
        return f"reserved {flight}"

    def agent(state: Trip) -> dict[str, Any]:
        turn = sum(1 for m in state["messages"] if isinstance(m, AIMessage))
        model = GenericFakeChatModel(messages=iter(SCRIPT[turn:]))
        return {"messages": [model.invoke(state["messages"])], "log": [f"agent turn {turn + 1}"]}

    def approve(state: Trip) -> Command[Any]:
        call = state["messages"][-1].tool_calls[0]
        answer = interrupt(f"book {call['args']['flight']} for {FLIGHTS[call['args']['flight']]} EUR?")
        if answer == "yes":
            return Command(goto="tools", update={"log": ["approved"]})
        refusal = ToolMessage(content="the traveller said no", tool_call_id=call["id"])
        return Command(goto="agent", update={"messages": [refusal], "log": ["refused"]})

    def route(state: Trip) -> str:
        calls = state["messages"][-1].tool_calls
        if not calls:
            return END
        return "approve" if calls[0]["name"] == "book_flight" else "tools"

    builder = StateGraph(Trip)
    builder.add_node("agent", agent)
    builder.add_node("approve", approve)
    builder.add_node("tools", ToolNode([search_flights, book_flight]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", route, ["approve", "tools", END])
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=StatehouseSaver(client))


def part(name: str, addr: str, thread: str) -> None:
    config: RunnableConfig = {"configurable": {"thread_id": thread}}
    with Statehouse(addr, timeout=60) as client:
        graph = build(client)
        if name == "ask":
            graph.invoke(
                {"messages": [HumanMessage("Book me the cheapest flight to Lisbon.")], "log": []}, config
            )
            question = StatehouseSaver(client).wait_for_state(config, interrupted, timeout=10)
            print(f"  the agent asks: {question.pending_writes[0][2][0].value}")
        elif name == "approve":
            graph.invoke(Command(resume="yes"), config)
        elif name == "resume":
            result = graph.invoke(None, config)
            print(f"  the agent says: {result['messages'][-1].content}")
        elif name == "history":
            history(client, graph, config)


def history(client: Statehouse, graph: Any, config: RunnableConfig) -> None:
    thread = config["configurable"]["thread_id"]
    snapshots = list(graph.get_state_history(config))
    print(f"  {len(snapshots)} checkpoints, oldest first:")
    for snapshot in reversed(snapshots):
        meta = snapshot.metadata or {}
        last = snapshot.values.get("log", [])[-1:] or ["-"]
        step, source = meta.get("step"), meta.get("source")
        print(f"    step {step:>2} ({source}): next={list(snapshot.next)} last={last[0]}")
    events = list(client.replay(thread, namespace="langgraph"))
    first, last_ts = events[0].commit_ts, events[-1].commit_ts
    print(f"  its event log: {len(events)} commits, from commit_ts {first} to {last_ts}")
    for flight in client.list_keys(thread, namespace=BOOKINGS):
        calls = client.get_state(thread, flight, namespace=CALLS).value
        made = client.get_state(thread, flight, namespace=BOOKINGS).version
        print(f"  {flight}: the airline was called {calls} times; the reservation written {made} time(s)")


def story(addr: str, thread: str) -> int:
    def run(name: str) -> subprocess.Popen[str]:
        command = [sys.executable, __file__, "--addr", addr, "--thread", thread, "--part", name]
        return subprocess.Popen(command, text=True)

    print("1. the agent runs until it needs an approval")
    if run("ask").wait() != 0:
        return 1
    print("2. approved; the booking process is killed after the airline reserved the seat")
    with Statehouse(addr) as client:
        approving = run("approve")
        # The worst moment for a crash: the seat is reserved, LangGraph has not saved that yet.
        client.wait_for(thread, "AF5678", namespace=BOOKINGS, timeout=30)
        approving.send_signal(signal.SIGKILL)
        approving.wait()
        print(f"  the booking process was killed (exit code {approving.returncode})")
    print("3. a fresh process resumes the thread")
    if run("resume").wait() != 0:
        return 1
    print("4. what Statehouse kept")
    return run("history").wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--addr", default=None, help="statehoused address (default $STATEHOUSE_ADDR, localhost:50051)"
    )
    parser.add_argument("--thread", default="trip-to-lisbon", help="the LangGraph thread id")
    parser.add_argument("--part", choices=["ask", "approve", "resume", "history"], help="run one part only")
    args = parser.parse_args()
    addr = args.addr or os.environ.get("STATEHOUSE_ADDR") or "localhost:50051"
    if args.part:
        part(args.part, addr, args.thread)
        return 0
    return story(addr, args.thread)


if __name__ == "__main__":
    sys.exit(main())
