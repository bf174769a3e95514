"""What the benchmarks share: the agent-state value, percentiles, machine facts and load, argument types."""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

# The three keys an agent step writes.
KEYS = ("memory", "plan", "scratchpad")
# Versions reported with every result.
PACKAGES = ("statehouse", "grpcio", "protobuf", "rocksdict", "orjson", "pykka", "structlog")


class BenchmarkError(RuntimeError):
    """A run whose results cannot be trusted (failed client, incomplete log, bad data)."""


def agent_state(agent: str, key: str, step: int) -> dict[str, Any]:
    """A ~1 KB agent-state value: nested dicts, strings, ints and lists, changing each step."""
    return {
        "agent": agent,
        "key": key,
        "step": step,
        "status": "running" if step % 7 else "waiting_for_tool",
        "goal": "Summarise the open support tickets and draft replies for the urgent ones",
        "memory": {
            "facts": [
                f"ticket #{4100 + step % 50} is about a failed payment",
                "customer prefers email over phone",
                "refunds above 200 EUR need approval",
                "the billing API times out after 30 s under load",
            ],
            "entities": {"customer_id": 880_000 + step % 1000, "order_id": 51_000 + step, "region": "eu"},
        },
        "messages": [
            {"role": "user", "content": "Which tickets are still open and urgent?", "tokens": 11},
            {"role": "assistant", "content": f"Found {step % 9 + 3} urgent tickets, drafting.", "tokens": 14},
            {"role": "tool", "name": "ticket_search", "content": "status:open priority:high", "tokens": 8},
        ],
        "plan": [
            {"id": i, "action": action, "done": i < step % 4}
            for i, action in enumerate(("search", "read", "draft", "review"))
        ],
        "scores": [(step * 31 + i * 17) % 100 for i in range(16)],
        "budget": {"tokens_used": 1200 + step * 40, "tokens_limit": 128_000, "tool_calls": step % 25},
    }


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def machine_facts(data_root: Path, packages: Sequence[str] = PACKAGES) -> dict[str, Any]:
    """Cores, CPU, platform, package versions and the data directory's filesystem."""
    affinity = getattr(os, "sched_getaffinity", None)
    return {
        "cpu_count": os.cpu_count(),
        "usable_cores": len(affinity(0)) if affinity else os.cpu_count(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": {name: package_version(name) for name in packages},
        "data_dir_filesystem": filesystem_type(data_root),
    }


def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_version(name: str) -> str:
    """The installed version of distribution `name`, or "not installed"."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding `path` (Linux /proc/mounts), or "unknown"."""
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "unknown"
    resolved = str(path.resolve())
    best = ("", "unknown")
    for entry in mounts:
        mount_point, fs_type = entry[1], entry[2]
        inside = resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) > len(best[0]):
            best = (mount_point, fs_type)
    return best[1]


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


class OtherLoad:
    """CPU time the rest of the machine used while the benchmark ran (other processes skew its numbers).

    The machine's busy time comes from /proc/stat; this process's own, with its
    waited-for children (the daemons and etcds it started and stopped), from
    os.times(). What remains was spent by somebody else.
    """

    def __init__(self) -> None:
        self._machine = self._machine_busy_s()
        self._ours = self._our_cpu_s()
        self._wall = time.monotonic()

    @staticmethod
    def _machine_busy_s() -> float | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()
        except OSError:
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[1:9])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _our_cpu_s() -> float:
        times = os.times()
        return times.user + times.system + times.children_user + times.children_system

    def measure(self) -> dict[str, float] | None:
        """Core-seconds used by other processes since construction, and that as a share of all cores."""
        machine = self._machine_busy_s()
        if machine is None or self._machine is None:
            return None
        other = max(0.0, (machine - self._machine) - (self._our_cpu_s() - self._ours))
        capacity = (time.monotonic() - self._wall) * (os.cpu_count() or 1)
        return {"other_cpu_s": other, "other_share": other / capacity}
