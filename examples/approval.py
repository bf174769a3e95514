"""Human in the loop: an agent proposes an action, waits for a person's decision, and acts once.

    .venv/bin/python examples/approval.py agent                # proposes a refund, then waits
    .venv/bin/python examples/approval.py approve --by dana    # in another shell: the human says yes
    .venv/bin/python examples/approval.py explain              # why and when it acted, from the log

`reject --by NAME --reason TEXT` says no instead. A proposal is decided
once: a second decision is refused with exit code 1. The agent waits with a
watch (`client.wait_for`), not by polling, for as long as it takes
(`--timeout SECONDS` bounds it).

Kill the agent at any point and run `agent` again: it never proposes twice
and acts exactly once. `agent --crash-before-approval` SIGKILLs it while it
waits, `agent --crash-after-approval` after it read the decision but before
it acted. `--agent NAME` and `--addr HOST:PORT` go before the command.

The agent's keys: `proposal` (what and why, written once), `status`
(waiting, then done or rejected), `decision` (the human's, written once)
and `result` (what was done, written once together with status done).

Exit codes: 0 ok (a rejected proposal included), 1 refused (a second
decision, nothing to decide on, no decision within --timeout), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from statehouse import ConflictError, DeadlineExceededError, Statehouse

# The case the agent works on: one order, charged twice for one delivery.
ORDER = "A-1042"
CHARGES_EUR = [25, 25]


def propose(agent: str) -> dict[str, Any]:
    """The agent's deterministic "reasoning" over the case."""
    return {
        "action": "refund",
        "order": ORDER,
        "amount_eur": CHARGES_EUR[-1],
        "proposed_by": agent,
        "reasoning": (
            f"Order {ORDER} was charged {len(CHARGES_EUR)} times ({' + '.join(map(str, CHARGES_EUR))} EUR) "
            "for one delivery; the last charge has no shipment of its own."
        ),
    }


def issue_refund(proposal: dict[str, Any]) -> dict[str, Any]:
    """The action: a fake payments API. A real one would take the act's idempotency key as well,
    so that a redo after a crash between paying and committing could not pay twice."""
    return {"refund_id": f"RF-{proposal['order']}", "amount_eur": proposal["amount_eur"]}


def describe(proposal: dict[str, Any]) -> str:
    return f"{proposal['action']} {proposal['amount_eur']} EUR on order {proposal['order']}"


def verdict(decision: dict[str, Any]) -> str:
    verb = "approved" if decision["approved"] else "rejected"
    return f"{verb} by {decision['by']}" + (f' ("{decision["reason"]}")' if decision["reason"] else "")


def crash(why: str) -> None:
    print(f"SIGKILL {why}")
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


# -- the agent ---------------------------------------------------------------------------


def run_agent(
    client: Statehouse, agent: str, crash_before: bool, crash_after: bool, timeout: float | None
) -> int:
    state = client.get_agent_state(agent)  # one consistent view of every key
    if state.values.get("status") in ("done", "rejected"):
        print(f"agent {agent!r} is finished already (status {state.values['status']}); nothing to do")
        return 0
    if "proposal" in state.entries:
        proposal = state.values["proposal"]
        proposed_at = state.entries["proposal"].commit_ts
        print(f"the proposal of commit_ts {proposed_at} is still open; not proposing again")
        status_version = state.entries["status"].version
    else:
        proposal = propose(agent)
        with client.begin_transaction(idempotency_key=f"{agent}/propose") as tx:
            tx.write(agent, "proposal", proposal, expected_version=0)
            tx.write(agent, "status", "waiting", expected_version=0)
        print(f"proposed at commit_ts {tx.commit_ts}: {describe(proposal)}")
        print(f"  why: {proposal['reasoning']}")
        status_version = 1
    print("waiting for a human decision (approval.py approve --by NAME, or reject --by NAME --reason TEXT)")
    sys.stdout.flush()  # whoever reads this output learns now that the agent waits
    if crash_before:
        crash("while waiting (--crash-before-approval)")
    try:
        decision = client.wait_for(agent, "decision", timeout=timeout)
    except DeadlineExceededError:
        print(f"no decision within {timeout} s; run `approval.py agent` again to wait on", file=sys.stderr)
        return 1
    print(f"{verdict(decision.value)} at commit_ts {decision.commit_ts}")
    if crash_after:
        crash("after reading the decision, before acting (--crash-after-approval)")
    try:
        if not decision.value["approved"]:
            with client.begin_transaction(idempotency_key=f"{agent}/stop") as tx:
                tx.expect(agent, "decision", decision.version)
                tx.write(agent, "status", "rejected", expected_version=status_version)
            print(f"not acting; status rejected at commit_ts {tx.commit_ts}")
            return 0
        result = issue_refund(proposal)
        # The result and the status commit together, once: a redo of this
        # transaction (after a crash whose commit outcome was unknown) is
        # answered with the first commit's commit_ts.
        with client.begin_transaction(idempotency_key=f"{agent}/act") as tx:
            tx.expect(agent, "decision", decision.version)
            tx.write(agent, "result", result, expected_version=0)
            tx.write(agent, "status", "done", expected_version=status_version)
    except ConflictError as conflict:
        print(f"another process moved agent {agent!r} on ({conflict}); not acting", file=sys.stderr)
        return 1
    print(f"acted: refund {result['refund_id']} of {result['amount_eur']} EUR issued")
    print(f"status done at commit_ts {tx.commit_ts}")
    return 0


# -- the human -------------------------------------------------------------------------------


def decide(client: Statehouse, agent: str, by: str, approved: bool, reason: str) -> int:
    proposal = client.get_state(agent, "proposal")
    if not proposal.exists:
        print(f"agent {agent!r} has proposed nothing to decide on", file=sys.stderr)
        return 1
    decision = {"approved": approved, "by": by, "reason": reason}
    try:
        with client.begin_transaction() as tx:
            tx.expect(agent, "proposal", proposal.version)  # the proposal this person read
            tx.write(agent, "decision", decision, expected_version=0)  # decided once, by one person
    except ConflictError:
        earlier = client.get_state(agent, "decision")
        print(
            f"refused: the proposal was already {verdict(earlier.value)} at commit_ts {earlier.commit_ts}; "
            "a proposal is decided once",
            file=sys.stderr,
        )
        return 1
    print(f"{agent} proposed at commit_ts {proposal.commit_ts}: {describe(proposal.value)}")
    print(f"{verdict(decision)} at commit_ts {tx.commit_ts}")
    return 0


# -- the audit -----------------------------------------------------------------------------------


def explain(client: Statehouse, agent: str) -> int:
    """Reconstruct from the event log who proposed what and why, who decided when, and what was done."""
    proposed_at = decided_at = acted_at = None
    decision: dict[str, Any] = {}
    print(f"agent {agent!r}, from its event log:")
    for event in client.replay(agent):
        values = {op.key: op.value for op in event.operations}
        ts = event.commit_ts
        if "proposal" in values:
            proposed_at, proposal = ts, values["proposal"]
            print(f"commit_ts {ts}  {proposal['proposed_by']} proposed: {describe(proposal)}")
            print(f"  why: {proposal['reasoning']}")
        if "decision" in values:
            decided_at, decision = ts, values["decision"]
            print(f"commit_ts {ts}  {verdict(decision)}")
        if "result" in values:
            acted_at, result = ts, values["result"]
            print(
                f"commit_ts {ts}  {agent} acted: refund {result['refund_id']} of {result['amount_eur']} EUR"
            )
        elif values.get("status") == "rejected":
            print(f"commit_ts {ts}  {agent} stopped without acting")
    if proposed_at is None:
        print("it has proposed nothing yet")
    elif acted_at is not None:
        print(
            f"so: it acted at commit_ts {acted_at} because {decision['by']} approved at commit_ts "
            f"{decided_at} what it proposed at commit_ts {proposed_at}"
        )
    elif decided_at is not None and not decision["approved"]:
        print(f"so: it did not act: {decision['by']} rejected its proposal at commit_ts {decided_at}")
    elif decided_at is not None:
        print(f"so: {decision['by']} approved at commit_ts {decided_at}; it has not acted yet")
    else:
        print(f"so: it has not acted; its proposal of commit_ts {proposed_at} waits for a decision")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--addr", default=None, help="daemon HOST:PORT (default $STATEHOUSE_ADDR, then localhost:50051)"
    )
    parser.add_argument("--agent", default="refund-agent", help="the agent id (default refund-agent)")
    commands = parser.add_subparsers(dest="command", required=True)
    agent = commands.add_parser("agent", help="propose, wait for the decision, act once")
    crash = agent.add_mutually_exclusive_group()
    crash.add_argument("--crash-before-approval", action="store_true", help="SIGKILL while waiting")
    crash.add_argument("--crash-after-approval", action="store_true", help="SIGKILL before acting")
    agent.add_argument("--timeout", type=float, default=None, help="seconds to wait (default: forever)")
    approve = commands.add_parser("approve", help="the human approves the proposal")
    approve.add_argument("--by", required=True, help="who approves")
    approve.add_argument("--reason", default="", help="why (optional)")
    reject = commands.add_parser("reject", help="the human rejects the proposal")
    reject.add_argument("--by", required=True, help="who rejects")
    reject.add_argument("--reason", required=True, help="why")
    commands.add_parser("explain", help="why and when the agent acted, from the log")
    args = parser.parse_args()
    with Statehouse(args.addr) as client:
        if args.command == "agent":
            code = run_agent(
                client, args.agent, args.crash_before_approval, args.crash_after_approval, args.timeout
            )
        elif args.command in ("approve", "reject"):
            code = decide(client, args.agent, args.by, args.command == "approve", args.reason)
        else:
            code = explain(client, args.agent)
    sys.exit(code)


if __name__ == "__main__":
    main()
