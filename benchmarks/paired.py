"""A paired A/B of one agent's sequential commits: two daemons, one client alternating between them.

    .venv/bin/python -m benchmarks.paired [--a TREE] [--b TREE] [--a-env K=V ...] [--b-env K=V ...]
                                          [--steps 1500] [--reps 3]

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
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.deployment import Agent
from statehouse.testing import DaemonProcess

WARM_STEPS = 300


def _env(pairs: list[str], tree: Path) -> dict[str, str]:
    env = {"PYTHONPATH": str(tree), "STATEHOUSE_PIN_CPU": "0"}
    for pair in pairs:
        key, _, value = pair.partition("=")
        env[key] = value
    return env


def paired(trees: dict[str, Path], envs: dict[str, list[str]], steps: int) -> dict[str, list[float]]:
    """Seconds per commit of each daemon ("A", "B"), commits alternating between them."""
    with tempfile.TemporaryDirectory() as scratch:
        daemons = {
            name: DaemonProcess(Path(scratch) / name, env=_env(envs[name], trees[name])).start()
            for name in "AB"
        }
        try:
            agents = {name: Agent("statehouse", daemons[name].addr, "paired") for name in "AB"}
            for n in range(WARM_STEPS):
                for agent in agents.values():
                    agent.step(n)
            took: dict[str, list[float]] = {"A": [], "B": []}
            order = "AB"
            for n in range(WARM_STEPS, WARM_STEPS + steps):
                for name in order:
                    started = time.perf_counter()
                    agents[name].step(n)
                    took[name].append(time.perf_counter() - started)
                order = order[::-1]
            for agent in agents.values():
                agent.close()
            return took
        finally:
            for daemon in daemons.values():
                daemon.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = Path(__file__).resolve().parent.parent
    parser.add_argument("--a", type=Path, default=here, help="source tree of daemon A")
    parser.add_argument("--b", type=Path, default=here, help="source tree of daemon B")
    parser.add_argument("--a-env", action="append", default=[], metavar="K=V")
    parser.add_argument("--b-env", action="append", default=[], metavar="K=V")
    parser.add_argument("--steps", type=int, default=1500, help="commits to each daemon per repetition")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    trees = {"A": args.a.resolve(), "B": args.b.resolve()}
    envs = {"A": args.a_env, "B": args.b_env}
    ratios = []
    for _ in range(args.reps):
        took = paired(trees, envs, args.steps)
        a, b = (statistics.median(took[name]) * 1000 for name in "AB")
        ratios.append(b / a)
        print(f"A p50 {a:.3f} ms  B p50 {b:.3f} ms  B/A {b / a:.3f}", flush=True)
    print(f"B/A median of {args.reps}: {statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
