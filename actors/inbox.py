"""`SimpleInboxActor`: a Pykka threading actor whose mailbox is a `queue.SimpleQueue`.

Pykka's threading actor takes its messages from a `queue.Queue`, whose `put`
and `get` go through a Python `Condition` (a lock made and dropped per wait).
A `SimpleQueue` does the same hand-off in C. Every commit crosses two
mailboxes (its namespace actor's, the ledger's); measured on this machine,
a put/get round trip between two threads (two hand-offs) took 27-30 µs and
29-32 µs of CPU with `Queue`, 13-14 µs and 11 µs with `SimpleQueue`
(docs/performance.md, "Mailboxes"). Pykka needs `put`, `get` and `empty`;
our status pages read `qsize`: a `SimpleQueue` has all four. It has no
bound and no `task_done`, which no actor here uses.
"""

from __future__ import annotations

import queue
from typing import Any

import pykka


class SimpleInboxActor(pykka.ThreadingActor):
    """A `pykka.ThreadingActor` with a `queue.SimpleQueue` for its mailbox."""

    @staticmethod
    def _create_actor_inbox() -> queue.SimpleQueue[Any]:
        return queue.SimpleQueue()
