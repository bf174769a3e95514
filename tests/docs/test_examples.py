"""The examples run as a user would run them, against a real daemon."""

from __future__ import annotations

import ast
import collections
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from statehouse import Statehouse
from statehouse.testing import DaemonProcess

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
KILLED = -signal.SIGKILL


def example(name: str, addr: str, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    """Run examples/<name> to the end; its exit code must be `expect`."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--addr", addr, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == expect, f"exit code {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


class Background:
    """An example running in the background; its output (stdout and stderr) is read line by line."""

    def __init__(self, name: str, addr: str, *args: str, argv: list[str] | None = None, **popen: Any) -> None:
        command = argv or [sys.executable, str(EXAMPLES / name), "--addr", addr, *args]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen
        )
        self.seen: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_for_line(self, start: str, timeout: float = 30.0) -> None:
        """Read output until a line starting with `start` (failing if none comes within `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            assert line is not None, f"exited before printing {start!r}:\n" + "\n".join(self.seen)
            self.seen.append(line)
            if line.startswith(start):
                return

    def finish(self, timeout: float = 30.0) -> tuple[int, list[str]]:
        """Wait for the exit; returns the exit code and every line it printed."""
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        while (line := self._lines.get_nowait()) is not None:
            self.seen.append(line)
        return code, self.seen

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def commits(client: Statehouse, agent: str) -> list[list[str]]:
    """The keys each commit of the agent wrote, in commit_ts order."""
    return [[op.key for op in event.operations] for event in client.replay(agent)]


def test_examples_say_how_to_run_them_and_use_only_the_public_sdk() -> None:
    scripts = sorted(EXAMPLES.glob("*.py"))
    assert [path.name for path in scripts] == [
        "approval.py",
        "langgraph_agent.py",
        "research_agent.py",
        "resumable_steps.py",
        "two_agents.py",
    ]
    for path in scripts:
        tree = ast.parse(path.read_text())
        assert f".venv/bin/python examples/{path.name} " in (ast.get_docstring(tree) or ""), path.name
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                assert top not in ("rpc", "actors", "storage"), f"{path.name} imports {module}"
                public = ("statehouse", "statehouse.langgraph")  # the SDK, and its LangGraph adapter
                assert top != "statehouse" or module in public, f"{path.name} imports {module}"


# -- resumable_steps.py --------------------------------------------------------------------


def run(addr: str, *args: str) -> list[str]:
    return example("resumable_steps.py", addr, *args).stdout.splitlines()


def test_resumable_steps_continue_after_a_restart(tmp_path: Path) -> None:
    with DaemonProcess(tmp_path / "data") as daemon:
        first = run(daemon.addr, "--steps", "2")
    assert first[0] == "starting fresh" and first[-1] == "step 2 committed at commit_ts 2"
    with DaemonProcess(tmp_path / "data") as daemon:
        second = run(daemon.addr, "--steps", "4")
        history = run(daemon.addr, "--replay")
    assert second == [
        "resuming after step 2",
        "step 3 committed at commit_ts 3",
        "step 4 committed at commit_ts 4",
    ]
    assert history[0] == "commit_ts 1: step/0001@v1, progress@v1"
    assert history[-1] == "commit_ts 4: step/0004@v1, progress@v4"
    assert len(history) == 4


# -- research_agent.py ---------------------------------------------------------------------

RESEARCHER = "research-agent"
ANSWER = "Mount Everest, K2 and Kangchenjunga: 26,046 m together, 8,682 m on average."


def lines_starting(lines: list[str], start: str) -> list[str]:
    return [line for line in lines if line.startswith(start)]


def test_research_agent_killed_before_a_commit_resumes_and_runs_every_step_once(tmp_path: Path) -> None:
    with DaemonProcess(tmp_path / "data") as daemon:
        crashed = example("research_agent.py", daemon.addr, "--crash-at-step", "3", expect=KILLED)
        out = crashed.stdout.splitlines()
        assert out[0] == "agent 'research-agent' starts a 6-step run at commit_ts 1"
        assert lines_starting(out, "step ") == ["step 1/6", "step 2/6", "step 3/6"]
        assert lines_starting(out, "  committed") == [
            "  committed at commit_ts 2",
            "  committed at commit_ts 3",
        ]
        assert out[-2:] == [
            "  result:  K2: K2, on the border of Pakistan and China, is 8,611 m high.",
            "  SIGKILL before step 3 commits (--crash-at-step 3)",
        ]

        again = example("research_agent.py", daemon.addr, expect=1)  # a new run on the same agent
        assert again.stdout == ""
        assert "already has a run (2 of 6 steps committed); pass --resume" in again.stderr
        nothing = example("research_agent.py", daemon.addr, "--agent", "nobody", "--resume", expect=1)
        assert "agent 'nobody' has no run to resume" in nothing.stderr

        out = example("research_agent.py", daemon.addr, "--resume").stdout.splitlines()
        assert out[0] == "resuming agent 'research-agent' from step 3 of 6 (steps 1-2 are committed)"
        assert lines_starting(out, "step ") == ["step 3/6", "step 4/6", "step 5/6", "step 6/6"]
        assert lines_starting(out, "  committed") == [f"  committed at commit_ts {ts}" for ts in range(4, 9)]
        assert "  tool:    calculator(expression='8849 + 8611 + 8586')" in out
        assert out[-2:] == [f"answer: {ANSWER}", "  committed at commit_ts 8"]

        finished = example("research_agent.py", daemon.addr, "--resume").stdout.splitlines()
        assert finished == [
            "agent 'research-agent' finished its run already (6 of 6 steps committed)",
            f"answer: {ANSWER}",
        ]
        replayed = example("research_agent.py", daemon.addr, "--replay").stdout.splitlines()

        with Statehouse(daemon.addr) as client:
            events = list(client.replay(RESEARCHER))
            assert [event.commit_ts for event in events] == list(range(1, 9))
            assert commits(client, RESEARCHER) == [
                ["run", "progress"],
                *([f"step/{step:03d}", "progress"] for step in range(1, 7)),
                ["answer"],
            ]
            assert [event.operations[-1].value for event in events[1:7]] == [{"step": n} for n in range(1, 7)]
            for step in range(1, 7):
                state = client.get_state(RESEARCHER, f"step/{step:03d}")
                assert (state.version, state.value["step"]) == (1, step)
            assert client.get_state(RESEARCHER, "step/003").value["args"] == {"query": "K2"}
            assert client.get_state(RESEARCHER, "answer").value == {"text": ANSWER, "after_step": 6}

            # A redo of step 3 under the example's idempotency key (as after a commit whose
            # outcome was unknown) writes nothing and is answered with step 3's commit_ts.
            with client.begin_transaction(idempotency_key="research-agent/step-3") as tx:
                tx.write(RESEARCHER, "step/003", {"redo": True}, expected_version=0)
            assert tx.commit_ts == 4
            assert client.get_state(RESEARCHER, "step/003").version == 1
            assert len(list(client.replay(RESEARCHER))) == 8

    assert lines_starting(replayed, "commit_ts ") == [
        "commit_ts 1  run started",
        *(f"commit_ts {step + 1}  step {step}" for step in range(1, 7)),
        "commit_ts 8  final answer",
    ]
    assert replayed.count("  tool:    search(query='K2')") == 1
    assert replayed[-1] == f"  {ANSWER}"


def test_research_agent_answers_another_question(tmp_path: Path) -> None:
    with DaemonProcess(tmp_path / "data") as daemon:
        args = ("--agent", "rivers", "--question", "How long are the longest rivers?")
        out = example("research_agent.py", daemon.addr, *args).stdout.splitlines()
    assert lines_starting(out, "  tool:    search") == [
        "  tool:    search(query='How long are the longest rivers?')",
        "  tool:    search(query='Nile')",
        "  tool:    search(query='Amazon')",
        "  tool:    search(query='Yangtze')",
    ]
    assert out[-2] == "answer: Nile, Amazon and Yangtze: 19,350 km together, 6,450 km on average."


# -- approval.py ---------------------------------------------------------------------------

APPROVER = "refund-agent"
WAITING = "waiting for a human decision"
PROPOSED = "proposed at commit_ts 1: refund 25 EUR on order A-1042"
STILL_OPEN = "the proposal of commit_ts 1 is still open; not proposing again"


def test_approval_agent_waits_for_the_human_and_acts_once(tmp_path: Path) -> None:
    with DaemonProcess(tmp_path / "data") as daemon:
        with Background("approval.py", daemon.addr, "agent", "--timeout", "30") as agent:
            agent.wait_for_line(WAITING)
            with Statehouse(daemon.addr) as client:
                assert client.get_state(APPROVER, "status").value == "waiting"
                assert not client.get_state(APPROVER, "result").exists
            approve = ("approve", "--by", "dana", "--reason", "both charges are on the statement")
            human = example("approval.py", daemon.addr, *approve).stdout.splitlines()
            code, out = agent.finish()
        assert human == [
            "refund-agent proposed at commit_ts 1: refund 25 EUR on order A-1042",
            'approved by dana ("both charges are on the statement") at commit_ts 2',
        ]
        assert code == 0
        assert out[0] == PROPOSED
        assert out[-3:] == [
            'approved by dana ("both charges are on the statement") at commit_ts 2',
            "acted: refund RF-A-1042 of 25 EUR issued",
            "status done at commit_ts 3",
        ]

        second = example(
            "approval.py", daemon.addr, "reject", "--by", "erin", "--reason", "too late", expect=1
        )
        assert "refused: the proposal was already approved by dana" in second.stderr
        assert "at commit_ts 2; a proposal is decided once" in second.stderr
        rerun = example("approval.py", daemon.addr, "agent")
        assert rerun.stdout == "agent 'refund-agent' is finished already (status done); nothing to do\n"
        explained = example("approval.py", daemon.addr, "explain").stdout.splitlines()

        with Statehouse(daemon.addr) as client:
            assert commits(client, APPROVER) == [["proposal", "status"], ["decision"], ["result", "status"]]
            decision = client.get_state(APPROVER, "decision")
            assert (decision.value["by"], decision.value["approved"], decision.version) == ("dana", True, 1)
            result = client.get_state(APPROVER, "result")
            assert (result.value, result.version) == ({"refund_id": "RF-A-1042", "amount_eur": 25}, 1)
            assert client.get_state(APPROVER, "status").value == "done"

    assert explained == [
        "agent 'refund-agent', from its event log:",
        "commit_ts 1  refund-agent proposed: refund 25 EUR on order A-1042",
        "  why: Order A-1042 was charged 2 times (25 + 25 EUR) for one delivery; "
        "the last charge has no shipment of its own.",
        'commit_ts 2  approved by dana ("both charges are on the statement")',
        "commit_ts 3  refund-agent acted: refund RF-A-1042 of 25 EUR",
        "so: it acted at commit_ts 3 because dana approved at commit_ts 2 what it proposed at commit_ts 1",
    ]


def test_approval_agent_rejected_does_not_act(tmp_path: Path) -> None:
    with DaemonProcess(tmp_path / "data") as daemon:
        with Background("approval.py", daemon.addr, "agent", "--timeout", "30") as agent:
            agent.wait_for_line(WAITING)
            example(
                "approval.py", daemon.addr, "reject", "--by", "erin", "--reason", "already refunded by hand"
            )
            code, out = agent.finish()
        assert code == 0
        assert out[-2:] == [
            'rejected by erin ("already refunded by hand") at commit_ts 2',
            "not acting; status rejected at commit_ts 3",
        ]
        late = example("approval.py", daemon.addr, "approve", "--by", "dana", expect=1)
        assert "already rejected by erin" in late.stderr
        explained = example("approval.py", daemon.addr, "explain").stdout.splitlines()
        with Statehouse(daemon.addr) as client:
            assert not client.get_state(APPROVER, "result").exists
            assert client.get_state(APPROVER, "status").value == "rejected"
            assert commits(client, APPROVER) == [["proposal", "status"], ["decision"], ["status"]]
    assert explained[-2:] == [
        "commit_ts 3  refund-agent stopped without acting",
        "so: it did not act: erin rejected its proposal at commit_ts 2",
    ]


def test_approval_agent_killed_while_waiting_resumes_without_proposing_again(tmp_path: Path) -> None:
    with DaemonProcess(tmp_path / "data") as daemon:
        crashed = example("approval.py", daemon.addr, "agent", "--crash-before-approval", expect=KILLED)
        out = crashed.stdout.splitlines()
        assert out[0] == PROPOSED
        assert out[-1] == "SIGKILL while waiting (--crash-before-approval)"
        with Background("approval.py", daemon.addr, "agent", "--timeout", "30") as agent:
            agent.wait_for_line(WAITING)
            example("approval.py", daemon.addr, "approve", "--by", "dana")
            code, out = agent.finish()
        assert code == 0
        assert out[0] == STILL_OPEN
        assert out[-2:] == ["acted: refund RF-A-1042 of 25 EUR issued", "status done at commit_ts 3"]
        with Statehouse(daemon.addr) as client:
            assert commits(client, APPROVER) == [["proposal", "status"], ["decision"], ["result", "status"]]
            assert client.get_state(APPROVER, "proposal").version == 1
            assert client.get_state(APPROVER, "result").version == 1


def test_approval_agent_killed_after_the_approval_acts_once_when_run_again(tmp_path: Path) -> None:
    with DaemonProcess(tmp_path / "data") as daemon:
        with Background(
            "approval.py", daemon.addr, "agent", "--crash-after-approval", "--timeout", "30"
        ) as agent:
            agent.wait_for_line(WAITING)
            example("approval.py", daemon.addr, "approve", "--by", "dana")
            code, out = agent.finish()
        assert code == KILLED
        assert out[-2:] == [
            "approved by dana at commit_ts 2",
            "SIGKILL after reading the decision, before acting (--crash-after-approval)",
        ]
        with Statehouse(daemon.addr) as client:
            assert client.get_state(APPROVER, "status").value == "waiting"
            assert not client.get_state(APPROVER, "result").exists

        rerun = example("approval.py", daemon.addr, "agent").stdout.splitlines()
        assert rerun[0] == STILL_OPEN
        assert rerun[2:] == [
            "approved by dana at commit_ts 2",
            "acted: refund RF-A-1042 of 25 EUR issued",
            "status done at commit_ts 3",
        ]
        explained = example("approval.py", daemon.addr, "explain").stdout.splitlines()
        with Statehouse(daemon.addr) as client:
            assert commits(client, APPROVER) == [["proposal", "status"], ["decision"], ["result", "status"]]
            assert client.get_state(APPROVER, "result").version == 1
    assert (
        explained[-1]
        == "so: it acted at commit_ts 3 because dana approved at commit_ts 2 what it proposed at commit_ts 1"
    )


# -- two_agents.py -------------------------------------------------------------------------


def test_two_agents_sell_seats_without_losing_an_update(tmp_path: Path) -> None:
    # The default sale, then a smaller one on the same keys (each run opens a new sale).
    sales = [((), 1000, 200), (("--seats", "120", "--bookings", "50"), 120, 50)]
    with DaemonProcess(tmp_path / "data") as daemon, Statehouse(daemon.addr) as client:
        versions_before = 0
        for sale, (args, seats, bookings) in enumerate(sales, start=1):
            total = 2 * bookings
            out = example("two_agents.py", daemon.addr, *args).stdout.splitlines()
            assert (
                out[0]
                == f"box-office: {seats} seats on sale; 2 agents book {bookings} each, at the same time"
            )
            pattern = rf"(agent-[ab]): booked {bookings} seats, retried (\d+) conflicts"
            workers = [re.fullmatch(pattern, line) for line in out[1:3]]
            assert all(workers), out[1:3]
            assert [worker.group(1) for worker in workers if worker] == ["agent-a", "agent-b"]
            retried = [int(worker.group(2)) for worker in workers if worker]
            assert out[3].startswith(f"conflicts retried: {sum(retried)} ")  # may be 0 on a slow machine
            assert out[4:] == [
                f"inventory: {seats - total} free, {total} sold, {total} new versions",
                f"seats booked: {total} ({bookings} by agent-a, {bookings} by agent-b)",
                "exact: every booking counted once, no update lost",
            ]

            inventory = client.get_state("box-office", "inventory")
            assert inventory.value == {"free": seats - total, "sold": total}
            assert inventory.version == versions_before + 1 + total  # opened, then one per booking
            versions_before = inventory.version
            sold = client.scan_prefix("box-office", "seat/")
            assert [seat.key for seat in sold] == [f"seat/{n:06d}" for n in range(1, total + 1)]
            assert {seat.version for seat in sold} == {2 * sale - 1}  # written once in each sale
            holders = collections.Counter(seat.value["holder"] for seat in sold)
            assert holders == {"agent-a": bookings, "agent-b": bookings}
            stats = [client.get_state("box-office", f"stats/{name}").value for name in ("agent-a", "agent-b")]
            assert [entry["conflicts"] for entry in stats] == retried


# -- examples/README.md, as a reader runs it ----------------------------------------------

README = EXAMPLES / "README.md"
README_TEST = "tests/docs/test_examples.py::test_the_examples_readme_runs_as_written"


def readme_steps() -> list[tuple[list[str], list[list[str]]]]:
    """The README's `sh` blocks run by this test, each with the output blocks after it.

    A block's commands run in order. One whose comment says `shell 1` runs in
    the background: the next command starts once it prints a line beginning
    `waiting for`, and the block ends when it exits. After the block come its
    commands' outputs (stdout and stderr), one plain block per command, in
    the order of the commands.
    """
    from test_doc_blocks import blocks

    steps: list[tuple[list[str], list[list[str]]]] = []
    for block in blocks(README):
        if block.mark != ("run by", README_TEST):
            continue
        if block.language == "sh":
            steps.append(([line for line in block.text.splitlines() if line.strip()], []))
        else:
            assert block.language == "" and steps, f"{block}: output with no command before it"
            steps[-1][1].append(block.text.splitlines())
    return steps


def test_the_examples_readme_runs_as_written(tmp_path: Path) -> None:
    """Every section of examples/README.md in order, on one fresh daemon, as the page says."""
    from test_doc_blocks import output_matches

    steps = readme_steps()
    assert len(steps) >= 8
    root = EXAMPLES.parent
    with DaemonProcess(tmp_path / "data") as daemon:
        env = {**os.environ, "STATEHOUSE_ADDR": daemon.addr}
        for commands, outputs in steps:
            assert len(outputs) == len(commands), f"{commands}: {len(outputs)} output blocks"
            running: list[tuple[int, Background]] = []
            printed: dict[int, list[str]] = {}
            for n, line in enumerate(commands):
                words = shlex.split(line, comments=True)
                assert words[0] == ".venv/bin/python", line  # this venv's python, whatever its path
                argv = [sys.executable, *words[1:]]
                if "# shell 1" in line:
                    job = Background("", "", argv=argv, cwd=root, env=env)
                    job.wait_for_line("waiting for")
                    running.append((n, job))
                else:
                    result = subprocess.run(
                        argv, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                        timeout=120,
                    )  # fmt: skip
                    printed[n] = result.stdout.splitlines()
            for n, job in running:
                printed[n] = job.finish()[1]
            for n, expected in enumerate(outputs):
                assert output_matches(expected, printed[n]), (
                    f"`{commands[n]}` printed:\n"
                    + "\n".join(printed[n])
                    + "\nthe page shows:\n"
                    + "\n".join(expected)
                )
