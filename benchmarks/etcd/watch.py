"""etcd's Watch as the benchmark uses it: one bidirectional stream per watcher, one key (or prefix) each.

    with EtcdWatch(channel, b"/agents/a/approval") as watch:
        for event in watch:  # mvccpb Events, in revision order
            ...

The stream is created and etcd's `created` answer received before the
constructor returns, so a put made after it is delivered.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import grpc

from benchmarks.common import BenchmarkError
from benchmarks.etcd import rpc_pb2 as etcd_pb
from benchmarks.etcd import rpc_pb2_grpc as etcd_grpc

_END = None  # ends the request stream


class EtcdWatch:
    """A watch of one key (or of [key, range_end)) on its own Watch stream; iterate for the events."""

    def __init__(
        self, channel: grpc.Channel, key: bytes, range_end: bytes = b"", start_revision: int = 0
    ) -> None:
        self._requests: queue.SimpleQueue[etcd_pb.WatchRequest | None] = queue.SimpleQueue()
        create = etcd_pb.WatchCreateRequest(key=key, range_end=range_end, start_revision=start_revision)
        self._requests.put(etcd_pb.WatchRequest(create_request=create))
        self._call: Any = etcd_grpc.WatchStub(channel).Watch(iter(self._requests.get, _END))
        first = next(self._call)
        if not first.created or first.canceled:
            self.cancel()
            raise BenchmarkError(f"etcd did not create the watch of {key!r}: {first.cancel_reason!r}")
        self.watch_id = first.watch_id

    def __iter__(self) -> Iterator[Any]:
        """Every event, in order, until `cancel`; etcd may put several in one response."""
        try:
            for response in self._call:
                if response.canceled:
                    raise BenchmarkError(f"etcd cancelled watch {self.watch_id}: {response.cancel_reason!r}")
                yield from response.events
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                raise

    def cancel(self) -> None:
        self._requests.put(_END)
        self._call.cancel()

    def __enter__(self) -> EtcdWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()
