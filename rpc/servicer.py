"""The statehouse.v1 servicer: each method turns a request into one call on
the actor system or one read of the current view, and back into a response."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from actors import (
    ActorSystem,
    CommitRequest,
    Condition,
    Conflict,
    InvalidArgument,
    Mutation,
    Reply,
    ResourceExhausted,
    StatehouseFault,
    TxnOpen,
    Unavailable,
    VersionNotFound,
    Watcher,
    WatchFilter,
    new_client_txn_namespace,
)
from rpc import reads
from rpc.aio import CallContext, PerTurn, answer, answers
from rpc.convert import ValueCodec, ValueForm, check_names, check_namespace, check_prefix, fill_value
from rpc.status import ErrorCounter, conflict_message, grpc_errors, note_data_loss, status_of
from statehouse import __version__
from statehouse._proto import statehouse_pb2 as pb
from statehouse._proto import statehouse_pb2_grpc as pb_grpc
from storage import DataLossError, Event, HistoryCompactedError, ReadView, ViewMoved

# Longest an RPC without a deadline waits on an actor.
MAX_WAIT_SECONDS = 60.0
# Most commits one CommitBatch call, and reads one ReadBatch call, may carry.
MAX_BATCH_COMMITS = 4096
MAX_BATCH_READS = 4096
# A ReadBatch stops reading once its answer holds this many bytes (see ReadBatch).
READ_BATCH_BYTES = 16 * 1024 * 1024
# A ReplayBatch message holds at most this many events, or about this many bytes.
REPLAY_BATCH_EVENTS = 512
REPLAY_BATCH_BYTES = 1024 * 1024
# The longest attempt token of a Stage or Commit.
MAX_ATTEMPT_CHARS = 64
# A watch with nothing to send says how far it got this often (a heartbeat).
WATCH_HEARTBEAT_SECONDS = 5.0
# Tries of a paged read that purges or retention passes keep landing in (`_on_a_view`).
VIEW_TRIES = 8

R = TypeVar("R")


def _wait(context: CallContext) -> float:
    remaining = context.time_remaining()
    return MAX_WAIT_SECONDS if remaining is None else min(remaining, MAX_WAIT_SECONDS)


def _txn_open(request: pb.StageRequest | pb.CommitRequest) -> TxnOpen | None:
    """The request's TxnOpen, after checking the client-chosen id it opens."""
    if not request.HasField("open"):
        return None
    check_namespace(new_client_txn_namespace(request.txn_id))
    timeout = request.open.timeout_ms if request.open.HasField("timeout_ms") else None
    return TxnOpen(timeout)


def _fill_event(message: pb.ReplayEvent, event: Event, form: ValueForm, agent: bool = False) -> int:
    """Fill `message` from `event` (and its agent_id if `agent`); returns about the bytes added."""
    if agent and event.ops:
        message.agent_id = event.ops[0].agent_id
    message.txn_id = event.txn_id
    message.commit_ts = event.commit_ts
    message.committed_at_ms = event.committed_at_ms
    size = 32 + len(event.txn_id)
    operations = message.operations
    for op in event.ops:
        value = op.value
        if op.purge:
            operations.add(key=op.key, purged=True)
        elif value is None:
            operations.add(key=op.key, version=op.version, deleted=True)
        elif form.json and type(value) is bytes:  # the common case, inline
            operations.add(key=op.key, version=op.version, value_json=value)
        else:
            fill_value(operations.add(key=op.key, version=op.version), op.key, value, form)
        size += 16 + len(op.key) + (len(value) if value else 0)
    return size


def _read_latest(
    view: ReadView, request: pb.GetStateRequest, response: pb.GetStateResponse, at_ts: int | None = None
) -> None:
    """The key's latest record, or (`at_ts`) its newest committed at or before that commit."""
    namespace = check_names(request.namespace, request.agent_id, request.key)
    if at_ts is None:
        record = view.get(namespace, request.agent_id, request.key)
    else:
        record = view.record_at(namespace, request.agent_id, request.key, at_ts)
    if record is not None:
        response.version = record.version
        response.commit_ts = record.commit_ts
        response.exists = record.value is not None
        fill_value(response, request.key, record.value, ValueForm(request))


def _read_at_version(
    view: ReadView,
    request: pb.GetStateAtVersionRequest,
    response: pb.GetStateAtVersionResponse | pb.GetStateResponse,
) -> None:
    namespace = check_names(request.namespace, request.agent_id, request.key)
    if request.version == 0:
        raise InvalidArgument("version must be at least 1 (versions start at 1)")
    record = view.get_version(namespace, request.agent_id, request.key, request.version)
    if record is None:
        raise VersionNotFound(
            f"key {request.key!r} of agent {request.agent_id!r} in namespace "
            f"{namespace!r} has no version {request.version}"
        )
    response.version = request.version
    response.commit_ts = record.commit_ts
    response.exists = record.value is not None
    fill_value(response, request.key, record.value, ValueForm(request))


class StatehouseServicer(pb_grpc.StatehouseServiceServicer):
    def __init__(
        self,
        system: ActorSystem,
        max_value_bytes: int,
        git_sha: str = "unknown",
        max_streams: int = 32,
        max_message_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._system = system
        # A ReadBatch answer stops growing past this, and then holds one value more at
        # most: half of what a message has room for beside the largest value.
        self._read_batch_bytes = min(READ_BATCH_BYTES, max(1, (max_message_bytes - max_value_bytes) // 2))
        self.count_error = ErrorCounter(system.metrics)
        self._codec = ValueCodec(max_value_bytes)
        self._git_sha = git_sha
        # host:port of the HTTP endpoint, set once it listens (see Daemon.start); "" for none.
        self.http_addr = ""
        # A stream holds a server thread while its client reads slowly, so
        # streams get a bounded share of the threads and unary calls the rest.
        self._max_streams = max_streams
        self._streams = threading.BoundedSemaphore(max_streams)
        self._commits: PerTurn[tuple[CommitRequest, Reply[Any]]] = PerTurn(self._tell_commits)

    @grpc_errors
    def Health(self, request: pb.HealthRequest, context: CallContext) -> pb.HealthResponse:
        return pb.HealthResponse(status="ok")

    @grpc_errors
    def Version(self, request: pb.VersionRequest, context: CallContext) -> pb.VersionResponse:
        return pb.VersionResponse(version=__version__, git_sha=self._git_sha, http_addr=self.http_addr)

    # -- transactions --------------------------------------------------------

    @grpc_errors
    async def BeginTransaction(
        self, request: pb.BeginTransactionRequest, context: CallContext
    ) -> pb.BeginTransactionResponse:
        namespace = check_namespace(request.namespace)
        timeout = request.timeout_ms if request.HasField("timeout_ms") else None
        txn_id, applied = await answer(self._system.ask_begin(namespace, timeout), _wait(context))
        return pb.BeginTransactionResponse(txn_id=txn_id, timeout_ms=applied)

    @grpc_errors
    async def Write(self, request: pb.WriteRequest, context: CallContext) -> pb.WriteResponse:
        namespace = check_names(request.namespace, request.agent_id, request.key)
        struct = request.value if request.HasField("value") else None
        value = self._codec.value(request.key, request.value_json, struct)
        mutation = Mutation(namespace, request.agent_id, request.key, value)
        await answer(self._system.ask_stage(request.txn_id, (mutation,)), _wait(context))
        return pb.WriteResponse()

    @grpc_errors
    async def Delete(self, request: pb.DeleteRequest, context: CallContext) -> pb.DeleteResponse:
        namespace = check_names(request.namespace, request.agent_id, request.key)
        mutation = Mutation(namespace, request.agent_id, request.key, None)
        await answer(self._system.ask_stage(request.txn_id, (mutation,)), _wait(context))
        return pb.DeleteResponse()

    @grpc_errors
    async def Stage(self, request: pb.StageRequest, context: CallContext) -> pb.StageResponse:
        staged = self._commit_request(request)
        asked = self._system.ask_stage(
            staged.txn_id, staged.mutations, staged.open, staged.conditions, staged.attempt
        )
        await answer(asked, _wait(context))
        return pb.StageResponse()

    @grpc_errors
    async def Commit(self, request: pb.CommitRequest, context: CallContext) -> pb.CommitResponse:
        commit = self._commit_request(request)
        asked = self._system.commit_asked(commit)
        self._commits.add((commit, asked.reply))  # told with the others of this turn of the loop
        commit_ts = await answer(asked, _wait(context))
        return pb.CommitResponse(commit_ts=commit_ts)

    def _tell_commits(self, commits: list[tuple[CommitRequest, Reply[Any]]]) -> None:
        """Commits that came in during one turn of the loop (on any sessions or calls): one
        message to each namespace's actor for all of them, as for a `CommitBatch`."""
        try:
            self._system.tell_commits([commit for commit, _ in commits], [reply for _, reply in commits])
        except Exception as exc:  # a bug: answer every caller rather than leave one waiting
            for _, reply in commits:
                if not reply.done():
                    reply.set_exception(Unavailable(f"internal error telling commits: {exc!r}"))

    @grpc_errors
    async def CommitBatch(
        self, request: pb.CommitBatchRequest, context: CallContext
    ) -> pb.CommitBatchResponse:
        if len(request.commits) > MAX_BATCH_COMMITS:
            raise ResourceExhausted(
                f"a batch of {len(request.commits)} commits is too large (limit {MAX_BATCH_COMMITS})"
            )
        outcomes: list[int | Exception] = []
        valid: list[CommitRequest] = []
        for commit in request.commits:
            try:
                valid.append(self._commit_request(commit))
                outcomes.append(0)
            except StatehouseFault as exc:
                outcomes.append(exc)
        committed = iter(await answers(self._system.ask_commits(valid), _wait(context)) if valid else ())
        response = pb.CommitBatchResponse()
        for outcome in outcomes:
            if not isinstance(outcome, Exception):
                outcome = next(committed)
            if isinstance(outcome, Exception):
                code = status_of(outcome)
                self.count_error(code)
                if isinstance(outcome, DataLossError):
                    note_data_loss("CommitBatch", outcome)
                added = response.outcomes.add(code=code.value[0], message=str(outcome))
                if isinstance(outcome, Conflict):
                    added.conflict.CopyFrom(conflict_message(outcome))
            else:
                response.outcomes.add(commit_ts=outcome)
        return response

    def _commit_request(self, request: pb.CommitRequest | pb.StageRequest) -> CommitRequest:
        """The domain form of a Commit or Stage: mutations, conditions (theirs and those
        of conditional writes) and TxnOpen, all validated."""
        mutations = []
        conditions = []
        mutation_of = self._codec.mutation
        for m in request.mutations:
            mutation = mutation_of(m)
            mutations.append(mutation)
            if m.HasField("expected_version"):
                if m.if_absent:
                    raise InvalidArgument(
                        f"write of key {mutation.key!r}: if_absent and expected_version do not go together"
                    )
                conditions.append(
                    Condition(mutation.namespace, mutation.agent_id, mutation.key, m.expected_version)
                )
        for c in request.conditions:
            namespace = check_names(c.namespace, c.agent_id, c.key)
            conditions.append(Condition(namespace, c.agent_id, c.key, c.expected_version))
        if len(request.attempt) > MAX_ATTEMPT_CHARS:
            raise InvalidArgument(
                f"attempt is {len(request.attempt)} characters long; the limit is {MAX_ATTEMPT_CHARS}"
            )
        return CommitRequest(
            request.txn_id, tuple(mutations), _txn_open(request), tuple(conditions), request.attempt
        )

    @grpc_errors
    async def Abort(self, request: pb.AbortRequest, context: CallContext) -> pb.AbortResponse:
        await answer(self._system.ask_abort(request.txn_id, request.attempt), _wait(context))
        return pb.AbortResponse()

    @grpc_errors
    def Purge(self, request: pb.PurgeRequest, context: CallContext) -> pb.PurgeResponse:
        namespace = check_names(request.namespace, request.agent_id)
        check_prefix(request.key_prefix)
        result = self._system.purge(namespace, request.agent_id, request.key_prefix, _wait(context))
        return pb.PurgeResponse(
            commit_ts=result.commit_ts, keys_purged=result.keys, events_rewritten=result.events
        )

    @grpc_errors
    def Compact(self, request: pb.CompactRequest, context: CallContext) -> pb.CompactResponse:
        seconds = self._system.compact()
        return pb.CompactResponse(duration_ms=round(seconds * 1000))

    @grpc_errors
    def CreateSnapshot(
        self, request: pb.CreateSnapshotRequest, context: CallContext
    ) -> pb.CreateSnapshotResponse:
        info = self._system.snapshot(_wait(context))
        return pb.CreateSnapshotResponse(path=str(info.path), commit_ts=info.commit_ts)

    # -- reads -------------------------------------------------------------------

    def _on_a_view(self, read: Callable[[ReadView], R]) -> R:
        """`read` on the newest view; again on a newer one if a purge or retention pass landed
        during it (`ViewMoved`: storage/view.py), a few times, then UNAVAILABLE."""
        for _ in range(VIEW_TRIES - 1):
            try:
                return read(self._system.view())
            except ViewMoved:
                continue
        return read(self._system.view())

    @grpc_errors
    def GetState(self, request: pb.GetStateRequest, context: CallContext) -> pb.GetStateResponse:
        response = pb.GetStateResponse()
        _read_latest(self._system.view(), request, response)
        return response

    @grpc_errors
    def GetStateAtVersion(
        self, request: pb.GetStateAtVersionRequest, context: CallContext
    ) -> pb.GetStateAtVersionResponse:
        def read(view: ReadView) -> pb.GetStateAtVersionResponse:
            response = pb.GetStateAtVersionResponse()
            _read_at_version(view, request, response)
            return response

        return self._on_a_view(read)

    @grpc_errors
    def ReadBatch(self, request: pb.ReadBatchRequest, context: CallContext) -> pb.ReadBatchResponse:
        if len(request.reads) > MAX_BATCH_READS:
            raise ResourceExhausted(
                f"a batch of {len(request.reads)} reads is too large (limit {MAX_BATCH_READS})"
            )
        return self._on_a_view(lambda view: self._read_batch(view, request))

    def _read_batch(self, view: ReadView, request: pb.ReadBatchRequest) -> pb.ReadBatchResponse:
        """Every read of the batch on `view`: they all see the same commits."""
        as_of = reads.as_of(view, request.at_commit_ts if request.HasField("at_commit_ts") else None, None)
        response = pb.ReadBatchResponse(commit_ts=as_of)
        # The latest records are the ones as of the view's own commit.
        at_ts = None if as_of == view.last_commit_ts else as_of
        size = 0
        for read in request.reads:
            outcome = response.outcomes.add()
            if size >= self._read_batch_bytes:
                # The answer must fit one message: the rest are left for the
                # client to ask again (our SDK asks each alone).
                outcome.code = grpc.StatusCode.ABORTED.value[0]
                outcome.message = f"not read: this batch's answer already holds {size} bytes; read it again"
                continue
            try:
                kind = read.WhichOneof("read")
                if kind == "latest":
                    _read_latest(view, read.latest, outcome.state, at_ts)
                elif kind == "at_version":
                    _read_at_version(view, read.at_version, outcome.state)
                else:
                    raise InvalidArgument("a read names neither `latest` nor `at_version`")
            except (StatehouseFault, DataLossError, HistoryCompactedError) as exc:
                outcome.Clear()
                code = status_of(exc)
                self.count_error(code)
                if isinstance(exc, DataLossError):
                    note_data_loss("ReadBatch", exc)
                outcome.code = code.value[0]
                outcome.message = str(exc)
                if isinstance(exc, HistoryCompactedError):
                    outcome.horizon = exc.horizon
            size += outcome.ByteSize()
        return response

    @grpc_errors
    def ListKeys(self, request: pb.ListKeysRequest, context: CallContext) -> pb.ListKeysResponse:
        return self._on_a_view(lambda view: reads.list_keys(view, request))

    @grpc_errors
    def ListAgents(self, request: pb.ListAgentsRequest, context: CallContext) -> pb.ListAgentsResponse:
        return self._on_a_view(lambda view: reads.list_agents(view, request))

    @grpc_errors
    def ScanPrefix(self, request: pb.ScanPrefixRequest, context: CallContext) -> pb.ScanPrefixResponse:
        return self._on_a_view(lambda view: reads.scan_prefix(view, request))

    @grpc_errors
    def KeyHistory(self, request: pb.KeyHistoryRequest, context: CallContext) -> pb.KeyHistoryResponse:
        return self._on_a_view(lambda view: reads.key_history(view, request))

    @grpc_errors
    def Replay(self, request: pb.ReplayRequest, context: CallContext) -> Iterator[pb.ReplayEvent]:
        form = ValueForm(request)
        with self._stream(request) as events:
            for event in events:
                message = pb.ReplayEvent()
                _fill_event(message, event, form)
                yield message

    @grpc_errors
    def ReplayBatches(self, request: pb.ReplayRequest, context: CallContext) -> Iterator[pb.ReplayBatch]:
        # Each stream message costs ~90 us however small (measured on the development
        # VM): batching is what lets replay go past ~11k events/s.
        form = ValueForm(request)
        with self._stream(request) as events:
            batch = pb.ReplayBatch()
            size = 0
            try:
                for event in events:
                    size += _fill_event(batch.events.add(), event, form)
                    if len(batch.events) >= REPLAY_BATCH_EVENTS or size >= REPLAY_BATCH_BYTES:
                        yield batch
                        batch = pb.ReplayBatch()
                        size = 0
            except DataLossError:
                if batch.events:
                    yield batch  # every commit before the damage, then the error
                raise
            if batch.events:
                yield batch

    @grpc_errors
    def Watch(self, request: pb.WatchRequest, context: CallContext) -> Iterator[pb.WatchResponse]:
        if request.agent_id:
            namespace = check_names(request.namespace, request.agent_id)
        else:
            namespace = check_namespace(request.namespace)
        check_prefix(request.key_prefix)
        start = max(request.start_ts, 1) if request.HasField("start_ts") else None
        watch = WatchFilter(namespace, request.agent_id or None, request.key_prefix)
        if start is not None:  # a watch from before the horizon fails at once, as a replay does
            self._system.view().check_history(namespace, start, "a watch")
        with self._stream_place():
            watcher, routed = self._system.watch(watch)
            context.add_callback(watcher.close)  # the client went away: wake the stream, end it
            try:
                yield from self._watch(watcher, routed, start, ValueForm(request))
            finally:
                watcher.close()

    def _watch(
        self, watcher: Watcher, routed: int, start: int | None, form: ValueForm
    ) -> Iterator[pb.WatchResponse]:
        """The log from `start` up to `routed`, then the watcher's live events."""
        # First answer at once: the client knows its watch is registered.
        yield pb.WatchResponse(progress_ts=routed if start is None else min(start - 1, routed))
        if start is not None and start <= routed:
            watch = watcher.filter
            view = self._system.view()
            # Again on the view the catch-up reads: retention may have moved since Watch checked.
            view.check_history(watch.namespace, start, "a watch")
            scanned: Iterator[tuple[int, list[Event]]]
            if watch.agent_id is not None:
                own = view.replay(watch.namespace, watch.agent_id, start, routed)
                scanned = ((e.commit_ts, [s] if (s := watch.slice(e)) is not None else []) for e in own)
            else:
                logged = itertools.takewhile(lambda event: event.commit_ts <= routed, view.events(start))
                scanned = ((event.commit_ts, watch.matches(event)) for event in logged)
            yield from self._watch_batches(scanned, form, start - 1, routed)
            del view
        while True:
            events, progress = watcher.take(WATCH_HEARTBEAT_SECONDS, REPLAY_BATCH_EVENTS, REPLAY_BATCH_BYTES)
            if watcher.closed:
                return
            if start is not None:
                events = [event for event in events if event.commit_ts >= start]
            response = pb.WatchResponse(progress_ts=progress)
            for event in events:
                _fill_event(response.events.add(), event, form, agent=True)
            yield response

    def _watch_batches(
        self, scanned: Iterator[tuple[int, list[Event]]], form: ValueForm, before_ts: int, last_ts: int
    ) -> Iterator[pb.WatchResponse]:
        """The matches of the log's commits after `before_ts`, (commit_ts, its matching
        slices) in order, in bounded responses; the last says `last_ts` was reached.

        A scan that finds nothing to send for a while (a narrow watch over a long
        log) still says how far it got, as a live watch's heartbeat does: the
        client knows the daemon is alive, and a resume starts from there. A scan
        that meets damaged data sends what it read before it, says how far that
        was, and ends the watch with DATA_LOSS: it never reports progress past
        a commit it could not read.
        """
        response = pb.WatchResponse()
        size = 0
        scanned_ts = before_ts
        sent_at = time.monotonic()
        try:
            for n, (commit_ts, parts) in enumerate(scanned):
                full = bool(parts) and (
                    size >= REPLAY_BATCH_BYTES or len(response.events) >= REPLAY_BATCH_EVENTS
                )
                quiet = n and n % 1024 == 0 and time.monotonic() - sent_at >= WATCH_HEARTBEAT_SECONDS
                if full or quiet:
                    response.progress_ts = scanned_ts  # between two commits: never split one
                    yield response
                    response = pb.WatchResponse()
                    size = 0
                    sent_at = time.monotonic()
                for part in parts:
                    size += _fill_event(response.events.add(), part, form, agent=True)
                scanned_ts = commit_ts
        except DataLossError as exc:
            response.progress_ts = scanned_ts
            yield response
            raise DataLossError(
                f"{exc}; this watch delivered every commit up to commit_ts {scanned_ts} and cannot go "
                "past the damage",
                detail=exc.detail,
            ) from exc
        response.progress_ts = last_ts
        yield response

    @contextlib.contextmanager
    def _stream_place(self) -> Iterator[None]:
        """Hold one of the bounded stream places (replays and watches share them)."""
        if not self._streams.acquire(blocking=False):
            raise ResourceExhausted(
                f"{self._max_streams} replay or watch streams are already open; finish or cancel one first"
            )
        try:
            yield
        finally:
            self._streams.release()

    @contextlib.contextmanager
    def _stream(self, request: pb.ReplayRequest) -> Iterator[Iterator[Event]]:
        """Validate a replay request and hold one of the bounded stream places."""
        namespace = check_names(request.namespace, request.agent_id)
        start = request.start_ts if request.HasField("start_ts") else None
        end = request.end_ts if request.HasField("end_ts") else None
        if start is not None and end is not None and start > end:
            raise InvalidArgument(f"start_ts ({start}) is after end_ts ({end})")
        with self._stream_place():
            yield self._system.view().replay(namespace, request.agent_id, start, end)
