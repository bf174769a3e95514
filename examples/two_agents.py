"""Two agents, one resource: two processes sell seats from one inventory, and no sale is lost.

    .venv/bin/python examples/two_agents.py                   # runs two worker processes, checks the result
    .venv/bin/python examples/two_agents.py --bookings 500    # more bookings each

The inventory is one key, `inventory` of the agent `box-office` (free and
sold seats). Each worker books seats one at a time by read-modify-write: it
reads the inventory, then commits it with one seat fewer, together with the
seat's own key, on condition that the inventory is still at the version it
read (`expected_version`). If the other worker sold a seat in between, the
commit fails with ConflictError and writes nothing; the worker reads again
and retries (`client.update` is this loop, for a single key). Both workers
start together: each marks itself ready, then waits (`client.wait_for`)
for the go the example commits once both are ready.

Afterwards the example checks that every booking counted exactly once:
free + sold is the number of seats, each seat number has one holder, and
the inventory has one new version per booking. It prints how many conflicts
were retried (their number depends on the machine; it may be 0) and exits
0 if the result is exact, 1 if not.

Each run starts a new sale: it first deletes the box office's keys.
`two_agents.py worker NAME` is one worker (the example runs two itself);
`--addr`, `--resource`, `--seats` and `--bookings` go before the command.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
from pathlib import Path

from statehouse import ConflictError, DeadlineExceededError, Statehouse

AGENTS = ("agent-a", "agent-b")
START_TIMEOUT_SECONDS = 60.0


def seat_key(seat: int) -> str:
    return f"seat/{seat:06d}"


# -- one worker --------------------------------------------------------------------------


def book_one(client: Statehouse, resource: str, name: str) -> int | None:
    """Book the next seat for `name`; returns the conflicts retried, or None if sold out."""
    conflicts = 0
    while True:
        inventory = client.get_state(resource, "inventory")
        free, sold = inventory.value["free"], inventory.value["sold"]
        if free == 0:
            return None
        try:
            with client.begin_transaction() as tx:
                tx.write(
                    resource,
                    "inventory",
                    {"free": free - 1, "sold": sold + 1},
                    expected_version=inventory.version,
                )
                tx.write(resource, seat_key(sold + 1), {"holder": name}, expected_version=0)
            return conflicts
        except ConflictError:
            conflicts += 1  # the other agent sold a seat since our read: read again


def work(client: Statehouse, resource: str, name: str, bookings: int) -> int:
    with client.begin_transaction() as tx:
        tx.write(resource, f"ready/{name}", True)
    try:
        client.wait_for(resource, "go", timeout=START_TIMEOUT_SECONDS)
    except DeadlineExceededError:
        print(f"{name}: no go within {START_TIMEOUT_SECONDS:.0f} s (two_agents.py gives it)", file=sys.stderr)
        return 1
    conflicts = 0
    for booked in range(bookings):
        retried = book_one(client, resource, name)
        if retried is None:
            print(f"{name}: sold out after {booked} bookings", file=sys.stderr)
            return 1
        conflicts += retried
    with client.begin_transaction() as tx:
        tx.write(resource, f"stats/{name}", {"booked": bookings, "conflicts": conflicts}, expected_version=0)
    print(f"{name}: booked {bookings} seats, retried {conflicts} conflicts")
    return 0


# -- the example: reset, start two workers, check ----------------------------------------------


def reset(client: Statehouse, resource: str, seats: int) -> int:
    """Open a new sale: delete every key of the box office but the inventory, which starts full.

    Returns the inventory's version, so the check can count one version per booking from it."""
    with client.begin_transaction() as tx:
        for key in client.list_keys(resource):
            if key != "inventory":
                tx.delete(resource, key)
        tx.write(resource, "inventory", {"free": seats, "sold": 0})
    return client.get_state(resource, "inventory").version


def start_workers(client: Statehouse, resource: str, bookings: int) -> list[subprocess.Popen[str]]:
    command = [sys.executable, str(Path(__file__).resolve()), "--addr", client.url, "--resource", resource]
    command += ["--bookings", str(bookings), "worker"]
    workers = [
        subprocess.Popen([*command, name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name in AGENTS
    ]
    try:
        for name in AGENTS:
            client.wait_for(resource, f"ready/{name}", timeout=START_TIMEOUT_SECONDS)
    except DeadlineExceededError:
        for worker in workers:
            worker.kill()
        raise
    with client.begin_transaction() as tx:
        tx.write(resource, "go", True)
    return workers


def check(client: Statehouse, resource: str, seats: int, bookings: int, start_version: int) -> list[str]:
    """What is not exact about the sale (empty: all is)."""
    total = bookings * len(AGENTS)
    problems = []
    inventory = client.get_state(resource, "inventory")
    versions = inventory.version - start_version
    print(
        f"inventory: {inventory.value['free']} free, {inventory.value['sold']} sold, {versions} new versions"
    )
    if inventory.value != {"free": seats - total, "sold": total}:
        problems.append(f"the inventory should be {seats - total} free, {total} sold")
    if versions != total:
        problems.append(f"the inventory should have one new version per booking: {total}")
    seats_sold = client.scan_prefix(resource, "seat/")  # in key order
    holders = {entry.key: entry.value["holder"] for entry in seats_sold}
    per_agent = collections.Counter(holders.values())
    print(f"seats booked: {len(holders)} ({', '.join(f'{per_agent[name]} by {name}' for name in AGENTS)})")
    if list(holders) != [seat_key(seat) for seat in range(1, total + 1)]:
        problems.append(f"seats 1 to {total} should each be booked exactly once")
    if any(per_agent[name] != bookings for name in AGENTS):
        problems.append(f"each agent should hold {bookings} seats")
    return problems


def run(client: Statehouse, resource: str, seats: int, bookings: int) -> int:
    start_version = reset(client, resource, seats)
    print(f"{resource}: {seats} seats on sale; {len(AGENTS)} agents book {bookings} each, at the same time")
    workers = start_workers(client, resource, bookings)
    failed = False
    for name, worker in zip(AGENTS, workers, strict=True):
        output, _ = worker.communicate()
        print(output, end="")
        if worker.returncode != 0:
            print(f"{name} failed with exit code {worker.returncode}")
            failed = True
    if failed:
        return 1
    conflicts = sum(client.get_state(resource, f"stats/{name}").value["conflicts"] for name in AGENTS)
    print(f"conflicts retried: {conflicts} (each a sale that would have overwritten the other agent's)")
    problems = check(client, resource, seats, bookings, start_version)
    for problem in problems:
        print(f"NOT EXACT: {problem}")
    if not problems:
        print("exact: every booking counted once, no update lost")
    return 1 if problems else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--addr", default=None, help="daemon HOST:PORT (default $STATEHOUSE_ADDR, then localhost:50051)"
    )
    parser.add_argument("--resource", default="box-office", help="the agent id holding the inventory")
    parser.add_argument("--seats", type=int, default=1000, help="seats on sale (default 1000)")
    parser.add_argument("--bookings", type=int, default=200, help="bookings per agent (default 200)")
    commands = parser.add_subparsers(dest="command")
    worker = commands.add_parser("worker", help="one agent booking seats (the example starts two)")
    worker.add_argument("name", help="the agent's name, recorded as each of its seats' holder")
    args = parser.parse_args()
    if args.bookings < 1 or args.seats < args.bookings * len(AGENTS):
        parser.error(f"--seats must be at least {len(AGENTS)} x --bookings, and --bookings at least 1")
    with Statehouse(args.addr) as client:
        if args.command == "worker":
            code = work(client, args.resource, args.name, args.bookings)
        else:
            code = run(client, args.resource, args.seats, args.bookings)
    sys.exit(code)


if __name__ == "__main__":
    main()
