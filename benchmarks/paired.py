"""A paired A/B of one agent's sequential commits: two daemons, one client alternating between them.

    .venv/bin/python -m benchmarks.paired [--a TREE] [--b TREE] [--a-env K=V ...] [--b-env K=V ...]
                                          [--steps 1500] [--reps 3] [--clients]

On these VMs a sequential commit's p50 moves by half or more from one run to
the next with the code unchanged (the machine's speed, and the disk's: an
fdatasync takes ~70 µs back to back and several hundred after an idle gap),
so runs made one after the other cannot tell a change of a few percent.
Here daemon A and daemon B (each a `statehoused` started from a source tree,
`--a`/`--b`, default this checkout, with environment variables of its own)
run at once, both on CPU 0, and one agent in this process commits W1 steps
(3 writes of ~1 KB) to A and B in turn (A B B A A B ...): whatever the
machine does meanwhile, both see it. Each repetition prints both p50s and
B/A; an A/A run (no options) shows the instrument's own spread, about ±1%.
What the client does is the same for both, so this measures daemon changes.

With `--clients` it measures client changes instead: one daemon (this
checkout's), and two agent processes, A with the SDK of `--a` and B with
that of `--b` (and `--a-env`/`--b-env` in their environments), committing
in turn. Each agent is a process of its own, as an agent is, so that what
one client does to its process (its I/O thread, its gRPC threads) stays
there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.deployment import Agent, steps_in_turn
from statehouse.testing import DaemonProcess

WARM_STEPS = 300


def _env(pairs: list[str]) -> dict[str, str]:
    env = {"STATEHOUSE_PIN_CPU": "0"}
    for pair in pairs:
        key, _, value = pair.partition("=")
        env[key] = value
    return env


def start_daemons(
    trees: dict[str, Path], envs: dict[str, list[str]], scratch: Path
) -> dict[str, DaemonProcess]:
    """Daemons "A" and "B", each run from its own source tree, with data directories in `scratch`."""
    daemons: dict[str, DaemonProcess] = {}
    try:
        for name in "AB":
            daemons[name] = DaemonProcess(scratch / name, env=_env(envs[name]), tree=trees[name]).start()
    except BaseException:
        for daemon in daemons.values():
            daemon.stop()
        raise
    return daemons


def paired(trees: dict[str, Path], envs: dict[str, list[str]], steps: int) -> dict[str, list[float]]:
    """Seconds per commit of each daemon ("A", "B"), commits alternating between them."""
    with tempfile.TemporaryDirectory() as scratch:
        daemons = start_daemons(trees, envs, Path(scratch))
        try:
            agents = {name: Agent("statehouse", daemons[name].addr, "paired") for name in "AB"}
            took = steps_in_turn(agents, WARM_STEPS, steps)
            for agent in agents.values():
                agent.close()
            return took
        finally:
            for daemon in daemons.values():
                daemon.stop()


# An agent process of `--clients`: one step per "s" read from stdin, a "." written after
# each; at "q", the steps' seconds as JSON on stderr. Imports only what older trees have too.
AGENT = """
import json, os, sys, time
from benchmarks.deployment import Agent, steps_in_turn

agent = Agent("statehouse", sys.argv[1], sys.argv[2])
took, n = [], 0
while sys.stdin.buffer.read(1) == b"s":
    started = time.perf_counter()
    agent.step(n)
    took.append(time.perf_counter() - started)
    n += 1
    sys.stdout.buffer.write(b".")
    sys.stdout.buffer.flush()
agent.close()
sys.stderr.write(json.dumps(took) + "\\n")
"""


def paired_clients(trees: dict[str, Path], envs: dict[str, list[str]], steps: int) -> dict[str, list[float]]:
    """Seconds per commit of agent processes A and B (SDKs of their own trees), taking turns
    on one daemon."""
    with tempfile.TemporaryDirectory() as scratch:
        daemon = DaemonProcess(Path(scratch) / "data").start()
        agents: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for name in "AB":
                env = {**os.environ, **_env(envs[name]), "PYTHONPATH": str(trees[name])}
                env.pop("STATEHOUSE_PIN_CPU")  # the agents' own CPUs are the OS's to choose
                agents[name] = subprocess.Popen(
                    [sys.executable, "-c", AGENT, daemon.addr, f"paired-{name}"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    env=env, cwd=trees[name],
                )  # fmt: skip
            order = "AB"
            for _ in range(WARM_STEPS + steps):
                for name in order:
                    _step(agents[name])
                order = order[::-1]
            took = {}
            for name, agent in agents.items():
                assert agent.stdin is not None and agent.stderr is not None
                agent.stdin.write(b"q")
                agent.stdin.close()
                lines = agent.stderr.read().decode().strip().splitlines()
                if agent.wait(60) != 0 or not lines:
                    raise RuntimeError(f"agent {name} failed:\n" + "\n".join(lines))
                took[name] = json.loads(lines[-1])[WARM_STEPS:]
            return took
        finally:
            for agent in agents.values():
                if agent.poll() is None:
                    agent.kill()
            daemon.stop()


def _step(agent: subprocess.Popen[bytes]) -> None:
    assert agent.stdin is not None and agent.stdout is not None
    agent.stdin.write(b"s")
    agent.stdin.flush()
    if agent.stdout.read(1) != b".":
        assert agent.stderr is not None
        raise RuntimeError("an agent process stopped:\n" + agent.stderr.read().decode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = Path(__file__).resolve().parent.parent
    parser.add_argument("--a", type=Path, default=here, help="source tree of daemon A")
    parser.add_argument("--b", type=Path, default=here, help="source tree of daemon B")
    parser.add_argument("--a-env", action="append", default=[], metavar="K=V")
    parser.add_argument("--b-env", action="append", default=[], metavar="K=V")
    parser.add_argument("--steps", type=int, default=1500, help="commits to each daemon per repetition")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--clients", action="store_true", help="A/B of the SDK: two agent processes, one daemon"
    )
    args = parser.parse_args(argv)
    trees = {"A": args.a.resolve(), "B": args.b.resolve()}
    envs = {"A": args.a_env, "B": args.b_env}
    ratios = []
    for _ in range(args.reps):
        took = (paired_clients if args.clients else paired)(trees, envs, args.steps)
        a, b = (statistics.median(took[name]) * 1000 for name in "AB")
        ratios.append(b / a)
        print(f"A p50 {a:.3f} ms  B p50 {b:.3f} ms  B/A {b / a:.3f}", flush=True)
    print(f"B/A median of {args.reps}: {statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
