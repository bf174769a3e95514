"""The benchmark's output: the table of medians with etcd ratios, the targets of issue 4, the JSON report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.contention import CLIENTS
from benchmarks.paging import CHURN_GAP_S, PAGE
from benchmarks.primitives import BLOB_OPS
from benchmarks.procstatus import SAMPLE_EVERY_S
from benchmarks.wake import FAN_OUT, ROUND_GAP_S
from benchmarks.workloads import NAMESPACE_THREADS, SEED_THREADS, CaseResult, Outcome, Sizes

TITLES = {
    "W1": "W1 agent steps: one transaction of 3 writes of ~{value_bytes:,} B JSON to the agent's own keys, "
    "durable; {w1_txns:,} per run, split over the agents (threads of one process)",
    "W2": "W2 reads of a {w2_keys:,}-key store (~{value_bytes:,} B JSON values, decoded); "
    "{w2_reads:,} random keys per run",
    "W3": "W3 replay: one agent's {w3_events:,}-event history streamed to the client",
    "W4": "W4 many namespaces: {w4_namespaces:,} namespaces touched once each by "
    f"{NAMESPACE_THREADS} threads, "
    "then {w4_idle_s:g} s idle; the daemon's /proc/<pid>/status sampled every "
    f"{SAMPLE_EVERY_S * 1000:.0f} ms",
    "W5": "W5 the old contract: W1 as statehouse 0.1.1 sends it (BeginTransaction, 3 Write RPCs "
    "with Struct values, Commit), one client (channel) per thread; {w5_txns:,} per run",
    "W6": "W6 watch wake latency: a writer commits an approval, agents blocked in a watch wake; "
    "{w6_approvals:,} approvals per run, one at a time; milliseconds",
    "W7": f"W7 contended counter: {CLIENTS} clients increment one counter "
    "{w7_increments:,} times each (read, then conditional write, retried on conflict)",
    "W8": "W8 paging and time travel: one agent of {w8_keys:,} keys (~200 B JSON values, each key written "
    f"twice), pages of {PAGE:,}; one key of " + "{w8_versions:,} versions",
    "W9": "W9 adapter primitives: one client, one operation at a time; {w9_reads:,} operations per run "
    f"({BLOB_OPS} for the 900 KB values)",
    "W10": "W10 forgetting: purge an agent of {w10_keys:,} keys, then compact, while another client "
    "commits 3-write steps one after the other; seconds, and the writer's commit times in ms",
    "W11": "W11 growth: {w11_commits:,} commits of 3 prose-like writes (~950 B JSON each) into a fresh "
    "store, measured every {w11_segment:,}",
    "W12": "W12 retention: {w12_commits:,} W11 steps into a fresh store, with and without retention "
    "letting history go meanwhile",
}

NOTES = {
    "W1": [
        "commits/fsync = commits per synced write (WriteBatch + WAL fsync), from the daemon's txn.commit "
        "log lines (`group`); etcd also fsyncs its WAL before acknowledging. daemon p50 = the daemon's "
        "own time from a transaction's begin to durable (txn.commit `duration_ms`).",
        "The agents are threads sharing one Statehouse client, as an agent framework runs them "
        "(asyncio agents would use AsyncStatehouse, which combines them the same way).",
        "A thread of this process also reads the daemon's log (one txn.commit line per transaction, "
        "parsed after the run) for commits/fsync; etcd's rows do not pay for that.",
    ],
    "W2": ["Latency is one get_state / get_state_at_version call, or one etcd Range, value decoded."],
    "W3": [
        f"The history is written by {SEED_THREADS} threads sharing one SDK client; then the daemon restarts."
    ],
    "W6": [
        "p50/p99 = from the writer sending the commit to the watcher's thread holding the decoded event; "
        "all awake = the same for the last watcher of a round; commit = the writer's commit call; "
        "wake = from the commit call returning (below zero: the event came first).",
        f"The {FAN_OUT}-watcher round is ONE transaction writing the approval key of {FAN_OUT} agents "
        f"(etcd: one Txn of {FAN_OUT} puts). The watchers are threads sharing one client (etcd: one "
        "Watch stream each on one channel); the writer has its own client (channel). Rounds are "
        f"{ROUND_GAP_S * 1000:.0f} ms apart, so each meets idle processes.",
    ],
    "W7": [
        "An increment = a read and a conditional commit (get_state, then a transaction writing with "
        "expected_version; etcd: Range, then a Txn comparing mod_revision); a conflict retries at once, "
        "no backoff. p50/p99 = one increment, retries included. The final count is checked exact.",
        "Sharing one client combines the threads' reads into ReadBatch calls and their commits into "
        "CommitBatch calls; every commit keeps its own condition, checked by the ledger in turn.",
        "update() = the SDK's read-modify-write (client.update(agent, key, fn)): the same read and "
        "conditional commit, but after a conflict it waits a jittered backoff (2 ms, doubling to 100 ms) "
        "before reading again; it does not report its conflicts.",
    ],
    "W8": [
        "items = keys, or versions for key_history. The listings page while a churn writer commits "
        f"~{1 / CHURN_GAP_S:.0f} transactions/s (delete a key, add one, rewrite one) and are checked against "
        "the keys as of the first page's commit_ts (etcd: revision); writer commits = those after it, "
        "during the listing (the wait for the first is left out of the time).",
        "Time travel reads every key as of the commit that ended the first generation (each key at "
        "version 1, with a newer version since); etcd's peer: a Range of values paged the same way, "
        "at that revision.",
    ],
    "W9": [
        "The latest key: scan_prefix(agent, prefix, reverse=True, limit=1), which seeks once from the "
        "end; 'reading them all' is what an adapter did before: scan_prefix(agent, prefix)[-1].",
        "get_many reads all 100 keys (of 100 agents, ~1 KB JSON each) in one ReadBatch as of one "
        "commit; the 100 get_state calls go one after the other from one thread.",
        "The 900 KB value is random bytes (a serializer's output compresses little); base64 makes "
        "it 1.2 MB of JSON string. A write is one durable transaction of a new key: the bytes travel "
        "in one Commit, the base64 JSON (past 1 MiB) in a Stage chunk and then a Commit; a read is "
        "get_state, value decoded (and base64-decoded).",
    ],
    "W10": [
        "The purge is one atomic write ordered with commits: the writer's commits queued behind it "
        "wait for it (max during purge). The compaction runs on RocksDB's threads beside commits.",
    ],
    "W12": [
        "dropped = ops the retainer let go meanwhile (each step makes the previous versions of its 3 "
        "keys droppable); the data directory is measured at the end, without a compaction.",
    ],
    "W11": [
        "last/first = the commit rate of the last segment over the first's; disk/value byte = the "
        "data directory's size at the end over the bytes of JSON values written. The per-segment "
        "rates and sizes are in the JSON report (rate_N, mb_N).",
    ],
}


@dataclass(frozen=True)
class Column:
    title: str
    figure: str
    fmt: str


RATE_COLUMNS = {
    "W1": (Column("commits/s", "ops_per_s", ",.0f"), Column("p50 ms", "p50_ms", ".2f"),
           Column("p99 ms", "p99_ms", ".2f"), Column("commits/fsync", "commits_per_synced_write", ".2f"),
           Column("daemon p50 ms", "daemon_p50_ms", ".2f")),
    "W2": (Column("reads/s", "ops_per_s", ",.0f"), Column("p50 ms", "p50_ms", ".3f"),
           Column("p99 ms", "p99_ms", ".3f")),
    "W3": (Column("events/s", "events_per_s", ",.0f"), Column("seconds", "elapsed_s", ".2f")),
    "W4": (Column("peak threads", "peak_threads", ",.0f"), Column("peak RSS MB", "peak_rss_mb", ",.0f"),
           Column("VmHWM MB", "hwm_mb", ",.0f"), Column("idle threads", "threads_idle", ",.0f"),
           Column("idle RSS MB", "rss_idle_mb", ",.0f"), Column("namespaces/s", "namespaces_per_s", ",.0f"),
           Column("stop s", "stop_s", ".1f")),
}  # fmt: skip
RATE_COLUMNS["W5"] = RATE_COLUMNS["W1"]
RATE_COLUMNS |= {
    "W6": (Column("p50", "p50_ms", ".2f"), Column("p99", "p99_ms", ".2f"),
           Column("all awake p50", "all_awake_p50_ms", ".2f"), Column("commit p50", "commit_p50_ms", ".2f"),
           Column("wake p50", "wake_p50_ms", ".2f"), Column("wake p99", "wake_p99_ms", ".2f")),
    "W7": (Column("increments/s", "ops_per_s", ",.0f"), Column("p50 ms", "p50_ms", ".1f"),
           Column("p99 ms", "p99_ms", ".1f"), Column("conflicts/incr", "conflicts_per_increment", ".2f"),
           Column("max conflicts", "max_conflicts", ",.0f")),
    "W8": (Column("items/s", "items_per_s", ",.0f"), Column("seconds", "elapsed_s", ".3f"),
           Column("pages", "pages", ",.0f"), Column("writer commits", "writer_commits", ",.0f")),
    "W9": (Column("ops/s", "ops_per_s", ",.1f"), Column("p50 ms", "p50_ms", ".3f"),
           Column("p99 ms", "p99_ms", ".3f")),
    "W10": (Column("purge s", "purge_s", ".2f"), Column("compact s", "compact_s", ".2f"),
            Column("writer p50 before", "writer_p50_before_ms", ".2f"),
            Column("commits in purge", "writer_commits_purge", ",.0f"),
            Column("max in purge", "writer_max_purge_ms", ".1f"),
            Column("p50 in compact", "writer_p50_compact_ms", ".2f"),
            Column("max in compact", "writer_max_compact_ms", ".1f")),
    "W11": (Column("first commits/s", "first_rate", ",.0f"), Column("last commits/s", "last_rate", ",.0f"),
            Column("last/first", "last_vs_first", ".2f"), Column("data dir MB", "dir_mb", ",.0f"),
            Column("disk/value byte", "disk_per_value_byte", ".2f")),
    "W12": (Column("commits/s", "ops_per_s", ",.0f"), Column("dropped", "dropped_ops", ",.0f"),
            Column("data dir MB", "dir_mb", ",.0f"), Column("disk/value byte", "disk_per_value_byte", ".2f")),
}  # fmt: skip
# The ratios to etcd a workload's rows show: (column title, figure).
RATE_AND_P50 = (("rate vs etcd", "ops_per_s"), ("p50 vs etcd", "p50_ms"))
RATIO_COLUMNS = {
    "W1": RATE_AND_P50,
    "W2": RATE_AND_P50,
    "W5": RATE_AND_P50,
    "W6": (("p50 vs etcd", "p50_ms"), ("p99 vs etcd", "p99_ms")),
    "W7": RATE_AND_P50,
    "W8": (("rate vs etcd", "items_per_s"),),
}


@dataclass(frozen=True)
class Target:
    """A goal of issue 4: the median `figure` of case `key`, or its ratio to etcd, against a bound."""

    name: str
    key: str
    figure: str
    bound: float
    at_least: bool  # True: value >= bound passes; False: value < bound (<= for ratios) passes
    vs_etcd: bool = False

    def measure(self, results: dict[str, CaseResult]) -> float | None:
        if self.vs_etcd:
            return ratio(results, self.key, self.figure)
        return figure(results, self.key, self.figure)

    def passes(self, value: float) -> bool:
        if self.at_least:
            return value >= self.bound
        return value <= self.bound if self.vs_etcd else value < self.bound


def ratio(results: dict[str, CaseResult], key: str, figure: str) -> float | None:
    """The case's median `figure` over its etcd peer's, from this run; None if either is missing."""
    mine = results.get(key)
    if mine is None or mine.case.peer is None or mine.case.peer not in results:
        return None
    ours, theirs = mine.median().get(figure), results[mine.case.peer].median().get(figure)
    return None if ours is None or not theirs else ours / theirs


def figure(results: dict[str, CaseResult], key: str, name: str) -> float | None:
    return results[key].median()[name] if key in results else None


W4_KEY = "W4 statehouse: one transaction per namespace"
TARGETS = (
    Target("W1 32 agents commits/s >= 1.0x etcd", "W1 statehouse: 32 agents, one shared client",
           "ops_per_s", 1.0, at_least=True, vs_etcd=True),
    Target("W1 sequential p50 <= 1.3x etcd", "W1 statehouse: 1 agent", "p50_ms", 1.3, at_least=False,
           vs_etcd=True),
    Target("W2 get latest, 1 reader >= 0.8x etcd range", "W2 statehouse: get latest, 1 reader", "ops_per_s",
           0.8, at_least=True, vs_etcd=True),
    Target("W2 get latest, 8 readers >= 0.8x etcd range", "W2 statehouse: get latest, 8 readers",
           "ops_per_s", 0.8, at_least=True, vs_etcd=True),
    Target("W3 replay >= 100,000 events/s", "W3 statehouse: SDK replay()", "events_per_s", 100_000,
           at_least=True),
    Target("W4 peak threads < 100", W4_KEY, "peak_threads", 100, at_least=False),
    Target("W4 peak RSS < 500 MB", W4_KEY, "peak_rss_mb", 500, at_least=False),
)  # fmt: skip


def evaluate_targets(results: dict[str, CaseResult], ran: set[str], etcd: bool) -> list[dict[str, Any]]:
    """Each target's value and PASS / MISS; targets of workloads not run are left out."""
    found = []
    for target in TARGETS:
        if target.key.split()[0] not in ran:
            continue
        value = target.measure(results)
        if value is None:
            shown, status = "-", "n/a (no etcd)" if not etcd else "n/a"
        else:
            shown = f"{value:.2f}x" if target.vs_etcd else f"{value:,.0f}"
            status = "PASS" if target.passes(value) else "MISS"
        found.append({"target": target.name, "value": value, "shown": shown, "status": status})
    return found


def render(outcomes: dict[str, Outcome], sizes: Sizes, value_bytes: int, runs: int) -> str:
    """The table of medians, workload by workload."""
    results = {c.case.key: c for outcome in outcomes.values() for c in outcome.results}
    lines = []
    for workload, outcome in outcomes.items():
        lines += [
            "",
            TITLES[workload].format(value_bytes=value_bytes, **asdict(sizes)) + f"; median of {runs}",
        ]
        lines += render_rows(
            outcome.results, RATE_COLUMNS[workload], RATIO_COLUMNS.get(workload, ()), results
        )
        lines += [f"  {key.replace('_', ' ')}: {value:,.0f}" for key, value in outcome.info.items()]
        lines += [f"  - {note}" for note in NOTES.get(workload, ())]
    return "\n".join(lines)


def render_rows(
    cases: Sequence[CaseResult],
    columns: Sequence[Column],
    ratios: Sequence[tuple[str, str]],
    results: dict[str, CaseResult],
) -> list[str]:
    """One row per case: its median figures, then the `ratios` (title, figure) over its etcd peer's."""
    width = max(len(f"{c.case.system}  {c.case.label}") for c in cases) + 2
    widths = [max(len(col.title), 9) + 2 for col in columns]
    if not any(c.case.peer in results for c in cases):
        ratios = ()
    header = f"  {'':<{width}}" + "".join(f"{col.title:>{w}}" for col, w in zip(columns, widths, strict=True))
    rows = [header + "".join(f"{title:>{len(title) + 2}}" for title, _ in ratios)]
    for case_result in cases:
        median, key = case_result.median(), case_result.case.key
        cells = [format(median[col.figure], col.fmt) if col.figure in median else "-" for col in columns]
        row = f"  {case_result.case.system + '  ' + case_result.case.label:<{width}}"
        row += "".join(f"{cell:>{w}}" for cell, w in zip(cells, widths, strict=True))
        for title, name in ratios:
            value = ratio(results, key, name)
            row += f"{'-' if value is None else f'{value:.2f}x':>{len(title) + 2}}"
        rows.append(row)
    return rows


def render_targets(targets: list[dict[str, Any]], quick: bool) -> str:
    """The targets' lines; none when no workload with a target ran (issue 5's have none)."""
    if not targets:
        return ""
    lines = ["", "Targets (issue 4)" + ("; --quick counts are too small to judge them" if quick else "")]
    width = max((len(t["target"]) for t in targets), default=0) + 2
    lines += [f"  {t['target']:<{width}}{t['shown']:>10}  {t['status']}" for t in targets]
    return "\n".join(lines)


def json_results(outcomes: dict[str, Outcome]) -> dict[str, Any]:
    """Every case with its medians, every run's raw figures, and its ratios to etcd."""
    results = {c.case.key: c for outcome in outcomes.values() for c in outcome.results}
    return {
        workload: {
            "info": outcome.info,
            "cases": [
                {
                    "key": c.case.key,
                    **asdict(c.case),
                    "median": c.median(),
                    "vs_etcd": {
                        name: ratio(results, c.case.key, name)
                        for name in ("ops_per_s", "p50_ms", "p99_ms", "items_per_s")
                        if c.case.peer in results and ratio(results, c.case.key, name) is not None
                    },
                    "runs": c.runs,
                }
                for c in outcome.results
            ],
        }
        for workload, outcome in outcomes.items()
    }
