"""A research agent that can be killed at any moment and continues exactly where it was.

The agent answers a question in steps. Each step asks a fake LLM (a
deterministic function of the question, the step number and what the
earlier steps found) for a thought and a tool call, runs the tool (a search
over a small built-in corpus, or a calculator), and commits the step record
and the progress marker in ONE transaction: a step is committed whole or not
at all. No network, no API key.

    .venv/bin/python examples/research_agent.py --crash-at-step 3   # SIGKILLs itself before step 3 commits
    .venv/bin/python examples/research_agent.py --resume            # continues at step 3
    .venv/bin/python examples/research_agent.py --replay            # the agent's history, from the log

`--question TEXT` asks something else (the corpus knows the highest
mountains and the longest rivers), `--steps N` sets how many steps the run
takes (default 6), `--agent NAME` which agent id holds it (default
research-agent). An agent holds one run: starting again on an agent that
has one is refused with exit code 1 (pass --resume, or another --agent);
--resume on an agent without a run is refused the same way. A resumed run
keeps the question and step count it started with.

The agent's keys: `run` (question, steps), `progress` (the last committed
step), `step/001`... (one record per step, written once) and `answer`.
"""

from __future__ import annotations

import argparse
import ast
import operator
import os
import re
import signal
import sys
from collections.abc import Callable
from typing import Any

from statehouse import ConflictError, Statehouse

DEFAULT_QUESTION = "What is the combined height of the three highest mountains on Earth?"

# The search tool's whole world: title -> (text, titles it links to).
CORPUS: dict[str, tuple[str, list[str]]] = {
    "highest mountains on Earth": (
        "The three highest mountains on Earth are Mount Everest, K2 and Kangchenjunga.",
        ["Mount Everest", "K2", "Kangchenjunga"],
    ),
    "Mount Everest": ("Mount Everest, on the border of Nepal and China, is 8,849 m high.", []),
    "K2": ("K2, on the border of Pakistan and China, is 8,611 m high.", []),
    "Kangchenjunga": ("Kangchenjunga, on the border of Nepal and India, is 8,586 m high.", []),
    "Mont Blanc": ("Mont Blanc, the highest mountain of the Alps, is 4,806 m high.", []),
    "longest rivers": (
        "The three longest rivers are the Nile, the Amazon and the Yangtze.",
        ["Nile", "Amazon", "Yangtze"],
    ),
    "Nile": ("The Nile flows north through eleven countries and is 6,650 km long.", []),
    "Amazon": ("The Amazon carries more water than any other river and is 6,400 km long.", []),
    "Yangtze": ("The Yangtze, the longest river in Asia, is 6,300 km long.", []),
}

_STOPWORDS = {"a", "an", "and", "are", "how", "is", "of", "on", "the", "what", "which", "who"}


# -- the tools -------------------------------------------------------------------------


def _words(text: str) -> set[str]:
    return {word for word in re.findall(r"[a-z0-9]+", text.lower()) if word not in _STOPWORDS}


def search(query: str) -> dict[str, Any]:
    """The corpus entry sharing most words with the query (a title word counts three times)."""
    wanted = _words(query)

    def score(title: str) -> int:
        return 3 * len(wanted & _words(title)) + len(wanted & _words(CORPUS[title][0]))

    best = max(CORPUS, key=score)  # ties go to the earlier entry
    if score(best) == 0:
        return {"title": None, "text": "no results", "links": []}
    text, links = CORPUS[best]
    return {"title": best, "text": text, "links": links}


_OPERATORS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def calculator(expression: str) -> int | float:
    """+ - * / over numbers and parentheses; a whole result comes back as an int."""

    def evaluate(node: ast.expr) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](evaluate(node.left), evaluate(node.right))
        raise ValueError(f"the calculator cannot evaluate {expression!r}")

    value = evaluate(ast.parse(expression, mode="eval").body)
    return int(value) if float(value).is_integer() else round(value, 2)


TOOLS: dict[str, Callable[..., Any]] = {"search": search, "calculator": calculator}


# -- the fake LLM ------------------------------------------------------------------------


def _figure(result: Any) -> tuple[int, str] | None:
    """The measurement a search result states ("is 8,611 m high"), if any."""
    if not isinstance(result, dict):
        return None
    found = re.search(r"(\d[\d,]*) (m|km) (?:high|long)", result["text"])
    return (int(found.group(1).replace(",", "")), found.group(2)) if found else None


class Findings:
    """What the earlier steps found, as the fake LLM reads it from their records."""

    def __init__(self, notes: list[dict[str, Any]]) -> None:
        self.notes = notes
        first = notes[0]["result"] if notes else None
        self.subjects: list[str] = []
        if first and first["title"]:
            self.subjects = first["links"] or [first["title"]]
        self.figures: dict[str, tuple[int, str]] = {}
        self.computed: dict[str, Any] = {}
        for note in notes:
            figure = _figure(note["result"]) if note["tool"] == "search" else None
            if figure is not None:
                self.figures[note["result"]["title"]] = figure
            if note["tool"] == "calculator":
                self.computed[note["args"]["expression"]] = note["result"]

    def missing(self) -> list[str]:
        return [subject for subject in self.subjects if subject not in self.figures]

    def total_expression(self) -> str:
        return " + ".join(str(self.figures[subject][0]) for subject in self.subjects)

    def average_expression(self) -> str | None:
        total = self.computed.get(self.total_expression())
        return None if total is None else f"{total} / {len(self.subjects)}"


def think(question: str, step: int, notes: list[dict[str, Any]]) -> tuple[str, str, dict[str, Any]]:
    """The fake LLM: (question, step number, earlier steps' records) -> (thought, tool, arguments)."""
    if step == 1:
        return "First I find out what the question is about.", "search", {"query": question}
    findings = Findings(notes)
    missing = findings.missing()
    if missing:
        return f"Next I need the figure for {missing[0]}.", "search", {"query": missing[0]}
    if len(findings.subjects) > 1:
        total = findings.total_expression()
        if total not in findings.computed:
            return (
                f"I have all {len(findings.subjects)} figures; I add them up.",
                "calculator",
                {"expression": total},
            )
        average = findings.average_expression()
        if average not in findings.computed:
            return "Now the average, to put the total in proportion.", "calculator", {"expression": average}
    last = notes[-1]
    return f"I have what I need; I check step {last['step']} once more.", last["tool"], dict(last["args"])


def final_answer(notes: list[dict[str, Any]]) -> str:
    findings = Findings(notes)
    if not findings.subjects:
        return "I found nothing about this in my sources."
    if findings.missing():
        return f"I ran out of steps before finding the figure for {', '.join(findings.missing())}."
    unit = findings.figures[findings.subjects[0]][1]
    if len(findings.subjects) == 1:
        return f"{findings.subjects[0]}: {findings.figures[findings.subjects[0]][0]:,} {unit}."
    names = ", ".join(findings.subjects[:-1]) + " and " + findings.subjects[-1]
    total = findings.computed.get(findings.total_expression())
    if total is None:
        return f"I ran out of steps before adding up the figures for {names}."
    answer = f"{names}: {total:,} {unit} together"
    average = findings.computed.get(findings.average_expression() or "")
    return answer + (f", {average:,} {unit} on average." if average is not None else ".")


# -- the agent -------------------------------------------------------------------------------


def step_key(step: int) -> str:
    return f"step/{step:03d}"


def call_text(tool: str, args: dict[str, Any]) -> str:
    return f"{tool}({', '.join(f'{name}={value!r}' for name, value in args.items())})"


def result_text(result: Any) -> str:
    if isinstance(result, dict):
        return f"{result['title']}: {result['text']}" if result["title"] else result["text"]
    return str(result)


def crash() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def start(client: Statehouse, agent: str, question: str, steps: int) -> None:
    with client.begin_transaction(idempotency_key=f"{agent}/start") as tx:
        tx.write(agent, "run", {"question": question, "steps": steps}, expected_version=0)
        tx.write(agent, "progress", {"step": 0}, expected_version=0)
    print(f"agent {agent!r} starts a {steps}-step run at commit_ts {tx.commit_ts}")
    print(f"question: {question}")


def run(client: Statehouse, agent: str, crash_at: int | None, resuming: bool) -> None:
    """Run the agent's stored run from the step after the last committed one."""
    state = client.get_agent_state(agent)  # every key as of one commit: a consistent view
    question, steps = state.values["run"]["question"], state.values["run"]["steps"]
    progress = state.entries["progress"]
    done = progress.value["step"]
    if resuming and "answer" in state.values:
        print(f"agent {agent!r} finished its run already ({done} of {steps} steps committed)")
        print(f"answer: {state.values['answer']['text']}")
        return
    if resuming:
        committed = f"steps 1-{done} are committed" if done else "no step is committed yet"
        print(f"resuming agent {agent!r} from step {done + 1} of {steps} ({committed})")
    notes = [state.values[step_key(step)] for step in range(1, done + 1)]
    version = progress.version
    for step in range(done + 1, steps + 1):
        thought, tool, args = think(question, step, notes)
        result = TOOLS[tool](**args)
        record = {"step": step, "thought": thought, "tool": tool, "args": args, "result": result}
        print(f"step {step}/{steps}")
        print(f"  thought: {thought}")
        print(f"  tool:    {call_text(tool, args)}")
        print(f"  result:  {result_text(result)}")
        if step == crash_at:
            print(f"  SIGKILL before step {step} commits (--crash-at-step {crash_at})")
            crash()
        # The idempotency key makes a redo of this step commit at most once: a
        # commit still in flight when an earlier process died may land after
        # this process read `progress`; the redo is then answered with its commit_ts.
        with client.begin_transaction(idempotency_key=f"{agent}/step-{step}") as tx:
            tx.write(agent, step_key(step), record, expected_version=0)
            tx.write(agent, "progress", {"step": step}, expected_version=version)
        print(f"  committed at commit_ts {tx.commit_ts}")
        notes.append(record)
        version += 1
    answer = final_answer(notes)
    with client.begin_transaction(idempotency_key=f"{agent}/answer") as tx:
        tx.write(agent, "answer", {"text": answer, "after_step": steps}, expected_version=0)
    print(f"answer: {answer}")
    print(f"  committed at commit_ts {tx.commit_ts}")


def replay(client: Statehouse, agent: str) -> None:
    """Print the agent's history from its event log, one block per commit."""
    for event in client.replay(agent):
        values = {op.key: op.value for op in event.operations}
        steps = [key for key in values if key.startswith("step/")]
        if "run" in values:
            print(f"commit_ts {event.commit_ts}  run started")
            print(f"  question: {values['run']['question']}")
            print(f"  steps:    {values['run']['steps']}")
        for key in steps:
            record = values[key]
            print(f"commit_ts {event.commit_ts}  step {record['step']}")
            print(f"  thought: {record['thought']}")
            print(f"  tool:    {call_text(record['tool'], record['args'])}")
            print(f"  result:  {result_text(record['result'])}")
        if "answer" in values:
            print(f"commit_ts {event.commit_ts}  final answer")
            print(f"  {values['answer']['text']}")
        if not steps and not {"run", "answer"} & values.keys():
            print(f"commit_ts {event.commit_ts}  {', '.join(values)}")


def refuse(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--addr", default=None, help="daemon HOST:PORT (default $STATEHOUSE_ADDR, then localhost:50051)"
    )
    parser.add_argument("--agent", default="research-agent", help="the agent id holding the run")
    parser.add_argument("--question", help=f"what to research (default: {DEFAULT_QUESTION!r})")
    parser.add_argument("--steps", type=int, help="how many steps the run takes (default 6)")
    parser.add_argument("--crash-at-step", type=int, metavar="N", help="SIGKILL after step N's tool ran")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue after the last committed step")
    mode.add_argument("--replay", action="store_true", help="print the agent's history from the log")
    args = parser.parse_args()
    if (args.resume or args.replay) and (args.question is not None or args.steps is not None):
        parser.error("--question and --steps start a new run; --resume and --replay use the stored one")
    steps = 6 if args.steps is None else args.steps
    if steps < 1:
        parser.error("--steps must be at least 1")
    with Statehouse(args.addr) as client:
        if args.replay:
            replay(client, args.agent)
            return
        existing = client.get_agent_state(args.agent).values
        if args.resume and "run" not in existing:
            refuse(f"agent {args.agent!r} has no run to resume; run without --resume to start one")
        if not args.resume and "run" in existing:
            done, of = existing["progress"]["step"], existing["run"]["steps"]
            refuse(
                f"agent {args.agent!r} already has a run ({done} of {of} steps committed); "
                "pass --resume to continue it, or --agent NAME to start another"
            )
        if not args.resume:
            start(client, args.agent, args.question or DEFAULT_QUESTION, steps)
        try:
            run(client, args.agent, args.crash_at_step, resuming=args.resume)
        except ConflictError as conflict:
            refuse(f"another process is running agent {args.agent!r} ({conflict}); stopping")


if __name__ == "__main__":
    main()
