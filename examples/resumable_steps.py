"""A tiny agent that survives restarts: each step is one transaction.

Run it, stop it at any point (Ctrl-C, kill -9), run it again: it continues
from the last committed step and never repeats one. `--replay` prints the
agent's history from the log.

    .venv/bin/python examples/resumable_steps.py --steps 5
    .venv/bin/python examples/resumable_steps.py --replay
"""

from __future__ import annotations

import argparse

from statehouse import Statehouse

AGENT = "example-agent"


def run(client: Statehouse, steps: int) -> None:
    progress = client.get_state(AGENT, "progress")
    done = progress.value["step"] if progress.exists else 0
    print(f"resuming after step {done}" if done else "starting fresh")
    for step in range(done + 1, steps + 1):
        result = {"step": step, "thought": f"looked at item {step}", "score": step * step}
        with client.begin_transaction() as tx:  # the step and the progress marker commit together
            tx.write(AGENT, f"step/{step:04d}", result)
            tx.write(AGENT, "progress", {"step": step})
        print(f"step {step} committed at commit_ts {tx.commit_ts}")


def replay(client: Statehouse) -> None:
    for event in client.replay(AGENT):
        keys = ", ".join(f"{op.key}@v{op.version}" for op in event.operations)
        print(f"commit_ts {event.commit_ts}: {keys}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--addr", default=None, help="daemon HOST:PORT (default $STATEHOUSE_ADDR, then localhost:50051)"
    )
    parser.add_argument("--steps", type=int, default=5, help="run until this step is done")
    parser.add_argument("--replay", action="store_true", help="print the agent's history instead")
    args = parser.parse_args()
    with Statehouse(args.addr) as client:
        if args.replay:
            replay(client)
        else:
            run(client, args.steps)


if __name__ == "__main__":
    main()
