"""LangGraph's own conformance suite (langgraph-checkpoint-conformance) against both savers,
on a real daemon: every capability, base and extended, must pass."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES

from rpc.server import Daemon
from statehouse import AsyncStatehouse, Statehouse
from statehouse.langgraph import AsyncStatehouseSaver, StatehouseSaver


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_both_savers_pass_every_capability(daemon: Daemon, kind: str) -> None:
    url = f"127.0.0.1:{daemon.port}"

    @checkpointer_test(name=f"StatehouseSaver-{kind}")
    async def saver() -> AsyncIterator[StatehouseSaver | AsyncStatehouseSaver]:
        if kind == "sync":
            with Statehouse(url) as client:
                yield StatehouseSaver(client)
        else:
            async with AsyncStatehouse(url) as aclient:
                yield AsyncStatehouseSaver(aclient)

    report = asyncio.run(validate(saver))
    failures = {name: r.failures for name, r in report.results.items() if r.passed is not True}
    assert failures == {}, failures
    assert {name for name, r in report.results.items() if r.passed} == {c.value for c in ALL_CAPABILITIES}
    assert report.conformance_level() == "FULL"
    assert all(r.tests_passed > 0 and r.tests_failed == 0 for r in report.results.values())
    assert sum(r.tests_passed for r in report.results.values()) >= 80  # 81 in version 0.0.2
