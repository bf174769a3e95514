"""The adapters' logic as plans: generators that yield the Statehouse calls they need.

One plan serves both clients. `run` drives it with a `Statehouse`, `arun`
with an `AsyncStatehouse`: each call a plan yields is made and its answer
sent back (or its StatehouseError thrown in), until the plan returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from statehouse import AsyncStatehouse, Statehouse, StatehouseError
from statehouse._methods import advance
from statehouse.types import StateResult, StateSet

R = TypeVar("R")
DELETE = object()  # a Write of this value deletes its key


@dataclass(frozen=True, slots=True)
class Write:
    """One key a Commit sets (or deletes, with `DELETE`); `if_absent`: only if it has no live value."""

    namespace: str
    agent_id: str
    key: str
    value: Any
    if_absent: bool = False


class Call:
    """One Statehouse call a plan needs."""

    def run(self, client: Statehouse) -> Any:
        raise NotImplementedError

    async def arun(self, client: AsyncStatehouse) -> Any:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Get(Call):
    namespace: str
    agent_id: str
    key: str

    def run(self, client: Statehouse) -> StateResult:
        return client.get_state(self.agent_id, self.key, namespace=self.namespace)

    async def arun(self, client: AsyncStatehouse) -> StateResult:
        return await client.get_state(self.agent_id, self.key, namespace=self.namespace)


@dataclass(frozen=True, slots=True)
class GetMany(Call):
    namespace: str
    keys: list[tuple[str, str]]

    def run(self, client: Statehouse) -> StateSet:
        return client.get_many(self.keys, namespace=self.namespace)

    async def arun(self, client: AsyncStatehouse) -> StateSet:
        return await client.get_many(self.keys, namespace=self.namespace)


@dataclass(frozen=True, slots=True)
class Scan(Call):
    """Live keys under `prefix` with their values (`scan_prefix`)."""

    namespace: str
    agent_id: str
    prefix: str
    reverse: bool = False
    limit: int | None = None
    start_after: str | None = None

    def _args(self) -> dict[str, Any]:
        return {"reverse": self.reverse, "limit": self.limit, "start_after": self.start_after}

    def run(self, client: Statehouse) -> list[StateResult]:
        return client.scan_prefix(self.agent_id, self.prefix, namespace=self.namespace, **self._args())

    async def arun(self, client: AsyncStatehouse) -> list[StateResult]:
        return await client.scan_prefix(self.agent_id, self.prefix, namespace=self.namespace, **self._args())


@dataclass(frozen=True, slots=True)
class Keys(Call):
    """Live keys under `prefix` (`list_keys`)."""

    namespace: str
    agent_id: str
    prefix: str = ""

    def run(self, client: Statehouse) -> list[str]:
        return client.list_keys(self.agent_id, namespace=self.namespace, prefix=self.prefix)

    async def arun(self, client: AsyncStatehouse) -> list[str]:
        return await client.list_keys(self.agent_id, namespace=self.namespace, prefix=self.prefix)


@dataclass(frozen=True, slots=True)
class Agents(Call):
    """Agents with a live key, whose id starts with `prefix` (`list_agents`)."""

    namespace: str
    prefix: str = ""
    limit: int | None = None
    start_after: str | None = None

    def run(self, client: Statehouse) -> list[str]:
        return client.list_agents(
            self.namespace, prefix=self.prefix, limit=self.limit, start_after=self.start_after
        )

    async def arun(self, client: AsyncStatehouse) -> list[str]:
        return await client.list_agents(
            self.namespace, prefix=self.prefix, limit=self.limit, start_after=self.start_after
        )


@dataclass(frozen=True, slots=True)
class Commit(Call):
    """One transaction: every write, atomically; its commit_ts (0 when there is nothing to write)."""

    namespace: str
    writes: list[Write] = field(default_factory=list)

    def _fill(self, tx: Any) -> None:
        for w in self.writes:
            if w.value is DELETE:
                tx.delete(w.agent_id, w.key, namespace=w.namespace)
            else:
                tx.write(w.agent_id, w.key, w.value, namespace=w.namespace, if_absent=w.if_absent)

    def run(self, client: Statehouse) -> int:
        if not self.writes:
            return 0
        tx = client.begin_transaction(namespace=self.namespace)
        try:
            self._fill(tx)  # a value it cannot store raises here, after chunks may have gone ahead
        except BaseException:
            tx.abort()
            raise
        return tx.commit()

    async def arun(self, client: AsyncStatehouse) -> int:
        if not self.writes:
            return 0
        tx = client.begin_transaction(namespace=self.namespace)
        try:
            self._fill(tx)
        except BaseException:
            await tx.abort()
            raise
        return await tx.commit()


@dataclass(frozen=True, slots=True)
class Purge(Call):
    """Remove the agent's keys under `prefix` with their history (`purge`)."""

    namespace: str
    agent_id: str
    prefix: str = ""

    def run(self, client: Statehouse) -> int:
        return client.purge(self.agent_id, key_prefix=self.prefix, namespace=self.namespace)

    async def arun(self, client: AsyncStatehouse) -> int:
        return await client.purge(self.agent_id, key_prefix=self.prefix, namespace=self.namespace)


Plan = Generator[Call, Any, R]


def run(client: Statehouse, plan: Plan[R]) -> R:
    """Drive `plan` with the blocking client."""
    done, step = advance(plan, None, None)
    while not done:
        try:
            answer = step.run(client)
        except StatehouseError as exc:  # the call's error, thrown into the plan
            done, step = advance(plan, None, exc)
        else:
            done, step = advance(plan, answer, None)
    return step  # type: ignore[no-any-return]


async def arun(client: AsyncStatehouse, plan: Plan[R]) -> R:
    """Drive `plan` with the asyncio client."""
    done, step = advance(plan, None, None)
    while not done:
        try:
            answer = await step.arun(client)
        except StatehouseError as exc:
            done, step = advance(plan, None, exc)
        else:
            done, step = advance(plan, answer, None)
    return step  # type: ignore[no-any-return]


def owner_loop(loop: asyncio.AbstractEventLoop | None, who: str) -> asyncio.AbstractEventLoop:
    """The event loop an async adapter's blocking methods run on: the one its async methods
    used last. A RuntimeError says why there is none, or that the caller is on it (and
    would wait for itself)."""
    if loop is None or loop.is_closed():
        raise RuntimeError(
            f"{who}'s blocking methods run on the event loop its async methods used, and none has "
            "yet: call an async method first, or use the adapter built on the blocking client"
        )
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        raise RuntimeError(
            f"{who}'s blocking methods cannot run on its own event loop's thread (they would wait "
            "for that loop): use its async methods"
        )
    if not loop.is_running():
        raise RuntimeError(
            f"{who}'s blocking methods run on the event loop its async methods used, and that loop "
            "is not running now (nothing would ever run the call)"
        )
    return loop
