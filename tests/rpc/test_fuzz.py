"""Fuzz every RPC of the real server with random and mutated protobuf bytes.

A real gRPC server on port 0 (the in-process `daemon` fixture) gets, for each
method of the service descriptor (so a new RPC is covered without touching
this file), an equal share of cases:

* pure random bytes of random lengths;
* mutations of valid requests (built from the descriptor with plausible
  names, JSON values and transaction ids): bit flips, truncation, insertion
  and deletion of bytes, duplicated and reordered fields, huge and overlong
  varints, wrong wire types, invalid UTF-8 in string fields, absurd numbers
  and lengths, unknown and invalid field numbers, nested-group bombs, and the
  same mutations applied inside an embedded message (a Mutation of a
  CommitRequest) with its length kept right so the inner checks are reached.

Every call must end OK or with a status in ALLOWED, never INTERNAL/UNKNOWN
(a bug) or anything else; the daemon must answer Health throughout; and the
committed data must be untouched. Some templates carry the id of a real open
transaction, so a fuzzed Commit can legitimately commit: every commit_ts a
fuzzed Commit acknowledged is recorded, and afterwards the old log must be an
unchanged prefix of the new one, every new event must be one of those
acknowledged commits of a transaction this test opened, and the stored state
and version history must equal the fold of the whole log. With no such
commit the fingerprint must be identical.

    STATEHOUSE_FUZZ_CASES=50000 STATEHOUSE_FUZZ_SEED=123 .venv/bin/python -m pytest tests/rpc/test_fuzz.py -s
"""

from __future__ import annotations

import collections
import json
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor as pbd
from google.protobuf import text_format
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from actors import ActorConfig
from rpc.server import Daemon
from statehouse._proto import statehouse_pb2 as pb
from storage import keys as storage_keys
from storage.records import Event, EventOp, StateRecord, VersionRecord, slots
from storage.retention import Policies, Policy
from storage.store import purged

SERVICE = pb.DESCRIPTOR.services_by_name["StatehouseService"]
PATH = "/" + SERVICE.full_name + "/"
C = grpc.StatusCode
ALLOWED = {
    C.OK,
    C.INVALID_ARGUMENT,
    C.NOT_FOUND,
    C.FAILED_PRECONDITION,
    C.ABORTED,
    C.RESOURCE_EXHAUSTED,
    C.OUT_OF_RANGE,
}
TOTAL_CASES = int(os.environ.get("STATEHOUSE_FUZZ_CASES", "5000"))
HEALTH_EVERY = 250
CALL_TIMEOUT = 20.0

FD = pbd.FieldDescriptor
VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5
WIRE_TYPE = {
    FD.TYPE_DOUBLE: I64,
    FD.TYPE_FIXED64: I64,
    FD.TYPE_SFIXED64: I64,
    FD.TYPE_FLOAT: I32,
    FD.TYPE_FIXED32: I32,
    FD.TYPE_SFIXED32: I32,
    FD.TYPE_STRING: LEN,
    FD.TYPE_BYTES: LEN,
    FD.TYPE_MESSAGE: LEN,
}


# -- the wire format, by hand ---------------------------------------------------


def varint(n: int) -> bytes:
    n &= 2**64 - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint((number << 3) | wire_type)


def length_delimited(number: int, payload: bytes) -> bytes:
    return tag(number, LEN) + varint(len(payload)) + payload


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("bad varint")
        byte = data[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return n, pos


@dataclass
class Segment:
    number: int
    wire_type: int
    raw: bytes  # the whole field, tag included
    payload: bytes = b""  # the bytes of a length-delimited field


def split(data: bytes) -> list[Segment] | None:
    """The top-level fields of a well-formed message, or None."""
    out: list[Segment] = []
    pos = 0
    try:
        while pos < len(data):
            start = pos
            key, pos = _read_varint(data, pos)
            number, wire_type = key >> 3, key & 7
            payload = b""
            if wire_type == VARINT:
                _, pos = _read_varint(data, pos)
            elif wire_type == I64:
                pos += 8
            elif wire_type == I32:
                pos += 4
            elif wire_type == LEN:
                size, pos = _read_varint(data, pos)
                payload = data[pos : pos + size]
                pos += size
            else:
                return None
            if pos > len(data):
                return None
            out.append(Segment(number, wire_type, data[start:pos], payload))
    except ValueError:
        return None
    return out


# -- valid requests, from the descriptor --------------------------------------------


@dataclass
class Txns:
    """Transaction ids to put in requests: real open ones and every kind of wrong one."""

    begin: Callable[[str, int | None], str]
    rng: random.Random
    issued: set[str] = field(default_factory=set)  # every real id, from any source
    live: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)  # aborted, expired, or retired from `live`

    def fresh(self, namespace: str = "fuzz", timeout_ms: int | None = None) -> str:
        txn_id = self.begin(namespace, timeout_ms)
        self.issued.add(txn_id)
        return txn_id

    def pick(self) -> str:
        roll = self.rng.random()
        if roll < 0.5:
            while len(self.live) < 12:
                self.live.append(self.fresh(self.rng.choice(("fuzz", "ns", ""))))
            n = self.rng.randrange(len(self.live))
            if self.rng.random() < 0.1:  # retire it: later cases get a new one
                self.closed.append(self.live[n])
                self.live[n] = self.fresh()
            return self.live[n]
        if roll < 0.65 and self.closed:
            return self.rng.choice(self.closed)
        if roll < 0.85:  # well formed, never issued
            token = "".join(self.rng.choice("0123456789abcdef") for _ in range(24))
            return f"{self.rng.choice(('fuzz', 'ns', 'default', 'nobody', 'a:b'))}:{token}"
        return self.rng.choice(("", ":", "garbage", "fuzz:", "x" * 300, ":" + "0" * 24, "fuzz:" + "0" * 23))


NAMES = ["a", "k", "ns", "fuzz", "default", "k1", "key/with/slashes", "é", "日本", "🙂", " ", "a" * 128]
BAD_NAMES = ["", "\x00", "a\x00b", "n" * 129, "a" * 257, "k" * 1025, "\ud7ff", "\ufffe", "\u0085"]


def random_json(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth < 4 and roll < 0.25:
        return {
            rng.choice([*NAMES, "", "\x00"]): random_json(rng, depth + 1) for _ in range(rng.randrange(4))
        }
    if depth < 4 and roll < 0.4:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return rng.choice(
        [
            None,
            True,
            False,
            0,
            -1,
            2**53 + 1,
            2**63,
            2**64 + 7,
            -(10**40),
            1.5,
            -0.0,
            1e308,
            5e-324,
            "",
            "x",
            "\x00",
            "é🙂",
            rng.choice(NAMES),
        ]
    )


def json_value(rng: random.Random) -> bytes:
    """Mostly valid JSON bytes, sometimes absurd or broken."""
    roll = rng.random()
    if roll < 0.55:
        return json.dumps(random_json(rng), ensure_ascii=rng.random() < 0.5).encode()
    if roll < 0.75:  # nesting near and far past every parser's limit, around odd numbers
        depth = rng.choice([10, 200, 300, 1100, 5000, 30000])
        number = rng.choice([b"1", b"12345678901234567890", b"-123456789012345678901234567890", b"1e400"])
        open_, close = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
        return open_ * depth + number + close * rng.choice([depth, depth, 0])
    return rng.choice(
        [
            b"12345678901234567890",
            b"1e400",
            b"-0",
            b"NaN",
            b'"\\ud800"',  # an escaped lone surrogate
            b"null",
            b'"' + b"x" * rng.choice([1000, 100_000, 1_100_000]) + b'"',  # around the value limit
            b"\xff\xfe\x00\x00",
            b'"\xc0\x80"',  # overlong UTF-8
            b'"\xed\xa0\x80"',  # a UTF-8-encoded surrogate
            b"\x00",
            b'{"a":1,"a":2}',
            b"  1  ",
            b"\xef\xbb\xbf1",  # BOM
            b"1 2",
            rng.randbytes(rng.randrange(1, 40)),
        ]
    )


def number_value(rng: random.Random, name: str) -> int:
    if name in ("version", "start_ts", "end_ts") and rng.random() < 0.7:
        return rng.choice([1, 2, 3, 4, 5])
    if name == "timeout_ms" and rng.random() < 0.7:
        return rng.choice([1, 10, 1000, 30_000])
    return rng.choice(
        [0, 1, 2**31 - 1, 2**31, 2**32, 2**53, 2**63 - 1, 2**63, 2**64 - 1, rng.randrange(2**64)]
    )


def fill(message: Message, rng: random.Random, txns: Txns, depth: int = 0) -> Message:
    """Set most fields of `message` to plausible (sometimes invalid) values."""
    if message.DESCRIPTOR.full_name == "google.protobuf.Struct":
        value = random_json(rng)
        if isinstance(value, dict):
            try:
                message.update(value)  # type: ignore[attr-defined]
            except (ValueError, TypeError):
                pass
        return message
    for f in message.DESCRIPTOR.fields:
        if rng.random() < 0.15:
            continue
        repeated = f.is_repeated
        count = rng.choice([0, 1, 1, 2, 3, 5]) if repeated else 1
        for _ in range(count):
            if f.type == FD.TYPE_MESSAGE:
                if depth > 3:
                    continue
                target = getattr(message, f.name)
                child = target.add() if repeated else target
                fill(child, rng, txns, depth + 1)
                if not repeated:
                    child.SetInParent()
                continue
            value = scalar(f, rng, txns)
            if repeated:
                getattr(message, f.name).append(value)
            else:
                setattr(message, f.name, value)
    return message


def scalar(f: pbd.FieldDescriptor, rng: random.Random, txns: Txns) -> Any:
    if f.name == "txn_id":
        return txns.pick()
    if f.type == FD.TYPE_STRING:
        if f.name == "prefix" and rng.random() < 0.3:
            return ""
        if f.name == "namespace" and rng.random() < 0.2:
            return ""
        return rng.choice(BAD_NAMES) if rng.random() < 0.1 else rng.choice(NAMES)
    if f.type == FD.TYPE_BYTES:
        return json_value(rng)
    if f.type == FD.TYPE_BOOL:
        return rng.random() < 0.5
    if f.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return rng.choice([0.0, -0.0, 1.5, 1e308, float("inf"), float("nan")])
    if f.type == FD.TYPE_ENUM:
        return rng.choice(f.enum_type.values).number
    if f.type in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32):
        return rng.choice([0, 1, -1, 2**31 - 1, -(2**31)])
    if f.type in (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64):
        return rng.choice([0, 1, -1, 2**63 - 1, -(2**63)])
    if f.type in (FD.TYPE_UINT32, FD.TYPE_FIXED32):
        return rng.choice([0, 1, 2**32 - 1])
    return number_value(rng, f.name)


# -- mutations ---------------------------------------------------------------


# not UTF-8: stray bytes, overlong, a surrogate, past U+10FFFF, cut short
INVALID_UTF8 = [b"\xff", b"a\x80b", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82"]
HUGE_VARINTS = [
    varint(2**64 - 1),
    varint(2**63),
    b"\xff" * 10 + b"\x01",  # 11 bytes: longer than any varint
    b"\x80" * 9 + b"\x7f",  # 10 bytes, overflows 64 bits
    b"\xff" * 9,  # unterminated
    b"\x80\x80\x80\x80\x00",  # overlong encoding of 0
]


def random_bytes(rng: random.Random) -> bytes:
    size = rng.choice([0, 1, 2, 3, 5, 8, 16, 64, 256, 4096, rng.randrange(20000)])
    return rng.randbytes(size)


def field_numbers(desc: pbd.Descriptor, rng: random.Random) -> int:
    numbers = [f.number for f in desc.fields]
    if numbers and rng.random() < 0.8:
        return rng.choice(numbers)
    return rng.choice([0, 15, 16, 99, 2**29 - 1, 19000, 19999])  # 0 and 19000-19999 are reserved


def mutate(data: bytes, desc: pbd.Descriptor, rng: random.Random, depth: int = 0) -> tuple[str, bytes]:
    """One named mutation of a serialized `desc` message."""
    segments = split(data)
    nested = [
        (i, desc.fields_by_number[s.number].message_type)
        for i, s in enumerate(segments or [])
        if s.wire_type == LEN
        and s.number in desc.fields_by_number
        and desc.fields_by_number[s.number].type == FD.TYPE_MESSAGE
    ]
    if nested and depth < 3 and rng.random() < 0.25:
        assert segments is not None
        i, inner = rng.choice(nested)
        name, payload = mutate(segments[i].payload, inner, rng, depth + 1)
        segments[i] = Segment(segments[i].number, LEN, length_delimited(segments[i].number, payload))
        return f"inner.{name}", b"".join(s.raw for s in segments)

    kind = rng.choice(
        [
            "bitflip",
            "truncate",
            "insert",
            "delete",
            "duplicate",
            "reorder",
            "huge_varint",
            "wrong_wire_type",
            "bad_utf8",
            "absurd_length",
            "bad_field_number",
            "group_bomb",
            "splice",
        ]
    )
    if kind == "bitflip" and data:
        out = bytearray(data)
        for _ in range(rng.choice([1, 1, 2, 3, 8])):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return kind, bytes(out)
    if kind == "truncate" and data:
        return kind, data[: rng.randrange(len(data))]
    if kind == "insert":
        at = rng.randrange(len(data) + 1)
        return kind, data[:at] + random_bytes(rng)[:64] + data[at:]
    if kind == "delete" and data:
        at = rng.randrange(len(data))
        return kind, data[:at] + data[at + rng.randrange(1, 16) :]
    if kind == "duplicate" and segments:
        segment = rng.choice(segments)
        return kind, b"".join(s.raw for s in segments) + segment.raw * rng.choice([1, 2, 50])
    if kind == "reorder" and segments:
        rng.shuffle(segments)
        return kind, b"".join(s.raw for s in segments)
    if kind == "huge_varint":
        number = field_numbers(desc, rng)
        return kind, data + tag(number, VARINT) + rng.choice(HUGE_VARINTS)
    if kind == "wrong_wire_type" and desc.fields:
        f = rng.choice(desc.fields)
        right = WIRE_TYPE.get(f.type, VARINT)
        wrong = rng.choice([w for w in (VARINT, I64, LEN, SGROUP, EGROUP, I32, 6, 7) if w != right])
        body = {VARINT: varint(rng.randrange(2**64)), I64: rng.randbytes(8), I32: rng.randbytes(4)}
        body[LEN] = varint(3) + b"abc"
        return kind, data + tag(f.number, wrong) + body.get(wrong, b"")
    if kind == "bad_utf8":
        strings = [f for f in desc.fields if f.type == FD.TYPE_STRING]
        if strings:
            f = rng.choice(strings)
            text = rng.choice(NAMES).encode()
            at = rng.randrange(len(text) + 1)
            bad = text[:at] + rng.choice(INVALID_UTF8) + text[at:]
            return kind, data + length_delimited(f.number, bad)
    if kind == "absurd_length":
        number = field_numbers(desc, rng)
        size = rng.choice([2**31, 2**32 + 3, 2**63, 2**64 - 1, len(data) + 1, 2**28])
        return kind, data + tag(number, LEN) + varint(size) + b"xyz"
    if kind == "bad_field_number":
        number = rng.choice([0, 2**29, 2**31, 2**61])
        return kind, data + varint((number << 3) | rng.choice([VARINT, LEN])) + b"\x01\x01"
    if kind == "group_bomb":
        number = field_numbers(desc, rng) or 1
        depth_ = rng.choice([50, 101, 1000, 100_000])
        return kind, data + tag(number, SGROUP) * depth_ + tag(number, EGROUP) * rng.choice([0, depth_])
    if kind == "splice" and data:
        at = rng.randrange(len(data) + 1)
        return kind, data[:at] + data
    return "random", random_bytes(rng)


# -- the run -----------------------------------------------------------------------


@dataclass
class Finding:
    method: str
    code: grpc.StatusCode
    details: str
    kind: str
    request: bytes


def fingerprint(daemon: Daemon) -> tuple[Any, ...]:
    view = daemon.system.view()  # type: ignore[union-attr]
    return (view.last_commit_ts, list(view.events()), list(view.states()), list(view.versions()))


class Caller:
    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel

    def __call__(self, method: pbd.MethodDescriptor, raw: bytes) -> tuple[grpc.StatusCode, str, list[bytes]]:
        try:
            if method.server_streaming:
                stream = self.channel.unary_stream(PATH + method.name)(raw, timeout=CALL_TIMEOUT)
                if method.name == "Watch":  # live: it ends only when cancelled; its first answer will do
                    first = next(stream)
                    stream.cancel()
                    return C.OK, "", [first]
                return C.OK, "", list(stream)
            return C.OK, "", [self.channel.unary_unary(PATH + method.name)(raw, timeout=CALL_TIMEOUT)]
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or "", []  # type: ignore[attr-defined]


def request_class(method: pbd.MethodDescriptor) -> type[Message]:
    return GetMessageClass(method.input_type)


def healthy(call: Caller) -> bool:
    code, _, replies = call(SERVICE.methods_by_name["Health"], b"")
    return code == C.OK and pb.HealthResponse.FromString(replies[0]).status == "ok"


# The fuzzed daemon lets history go in one namespace: each key of "ns" keeps its 2 newest
# versions, checked every 0.2 s and by every fuzzed Compact.
RETAIN = {"ns": 2}


@pytest.fixture
def actor_config() -> ActorConfig:
    policies = Policies(Policy(), {ns: Policy(versions=n) for ns, n in RETAIN.items()})
    return replace(ActorConfig(), retention=policies, retention_every_seconds=0.2)


@pytest.fixture
def channel(daemon: Daemon) -> Iterator[grpc.Channel]:
    channel = grpc.insecure_channel(
        f"127.0.0.1:{daemon.port}",
        options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
    )
    yield channel
    channel.close()


def seed_data(call: Caller, txns: Txns) -> None:
    """Something to protect and to read: a few versions of a few keys, bytes values, and a delete."""
    for n in range(3):
        mutations = [
            pb.Mutation(namespace=ns, agent_id="a", key=key, value_json=b'{"n":%d}' % n)
            for ns in ("ns", "fuzz", "default")
            for key in ("k", "k1", "key/with/slashes")
        ]
        mutations.append(pb.Mutation(namespace="ns", agent_id="a", key="blob", value_bytes=b"\x00\xff%d" % n))
        if n == 2:
            mutations.append(pb.Mutation(namespace="ns", agent_id="a", key="k1", delete=True))
        request = pb.CommitRequest(txn_id=txns.fresh("ns"), mutations=mutations)
        code, details, _ = call(SERVICE.methods_by_name["Commit"], request.SerializeToString())
        assert code == C.OK, details
    aborted = txns.fresh()
    call(SERVICE.methods_by_name["Abort"], pb.AbortRequest(txn_id=aborted).SerializeToString())
    txns.closed.append(aborted)
    txns.closed.append(txns.fresh(timeout_ms=1))  # expires at once


def note_commits(method: str, raw: bytes, reply: bytes, acked: set[int], issued: set[str]) -> None:
    """Record what an accepted Commit, Stage or CommitBatch committed, and the ids it opened."""
    if method == "Stage":
        stage = pb.StageRequest.FromString(raw)
        if stage.HasField("open"):
            issued.add(stage.txn_id)
        return
    if method == "Commit":
        requests = [pb.CommitRequest.FromString(raw)]
        outcomes = [(0, pb.CommitResponse.FromString(reply).commit_ts)]
    else:
        requests = list(pb.CommitBatchRequest.FromString(raw).commits)
        outcomes = [(o.code, o.commit_ts) for o in pb.CommitBatchResponse.FromString(reply).outcomes]
    for request, (code, commit_ts) in zip(requests, outcomes, strict=True):
        if code == 0:
            acked.add(commit_ts)
            if request.HasField("open"):
                issued.add(request.txn_id)


def note_purge(raw: bytes, reply: bytes, purges: dict[int, tuple[str, str, str]]) -> None:
    """Record what an accepted Purge removed: commit_ts -> (namespace, agent_id, prefix)."""
    request = pb.PurgeRequest.FromString(raw)
    commit_ts = pb.PurgeResponse.FromString(reply).commit_ts
    purges[commit_ts] = (request.namespace or "default", request.agent_id, request.key_prefix)


def scrubbed(event: Event, purges: dict[int, tuple[str, str, str]]) -> Event:
    """An event as the acknowledged purges after it leave it: without the ops they removed."""
    later = [p for ts, p in purges.items() if ts > event.commit_ts]
    return without(event, lambda op: any(purged(op, *p) for p in later))


def retained(expected: Event, stored: Event, latest: dict[tuple[str, str, str], int]) -> Event:
    """`expected` without the ops retention let go, as `stored` shows them: each must be one
    RETAIN allows to go (not among the newest versions of its key, by `latest`)."""
    kept = {(op.namespace, op.agent_id, op.key, op.version) for op in stored.ops}
    gone = [op for op in expected.ops if (op.namespace, op.agent_id, op.key, op.version) not in kept]
    for op in gone:
        keep = RETAIN.get(op.namespace, 0)
        newest = latest.get((op.namespace, op.agent_id, op.key), 0)
        assert not op.purge and keep and op.version <= newest - keep, (
            f"commit_ts {expected.commit_ts}: {op} is gone from the log, but retention keeps it"
        )
    return without(expected, lambda op: op in gone)


def without(event: Event, going: Callable[[EventOp], bool]) -> Event:
    """The event without the ops `going` picks, as purge and retention rewrite it."""
    pairs = zip(slots(event), event.ops, strict=True)
    left = [(slot, op) for slot, op in pairs if not going(op)]
    if len(left) == len(event.ops):
        return event
    # The ops left keep their slots (their values' places in the stored event).
    kept = tuple(op._replace(slot=-1 if slot == at else slot) for at, (slot, op) in enumerate(left))
    return event._replace(ops=kept, scrubbed=True)


def check_store(
    daemon: Daemon,
    before: tuple[Any, ...],
    acked: set[int],
    issued: set[str],
    purges: dict[int, tuple[str, str, str]],
) -> int:
    """The store after the run: old log intact but for what acknowledged purges removed and
    retention let go, new events all acknowledged commits or purges, state = fold of log."""
    after = fingerprint(daemon)
    if after == before:
        return 0
    _, old_events, _, _ = before
    last_commit_ts, events, states, versions = after
    latest = {
        (op.namespace, op.agent_id, op.key): op.version
        for event in events
        for op in event.ops
        if not op.purge
    }
    expected_old = [scrubbed(event, purges) for event in old_events]
    expected_old = [retained(e, stored, latest) for e, stored in zip(expected_old, events, strict=False)]
    assert events[: len(old_events)] == expected_old, "the existing log changed"
    new = events[len(old_events) :]
    unacknowledged = [
        e for e in new if e.commit_ts not in purges and (e.commit_ts not in acked or e.txn_id not in issued)
    ]
    assert not unacknowledged, f"events no fuzzed Commit or Purge acknowledged: {unacknowledged[:3]}"
    assert last_commit_ts == events[-1].commit_ts
    folded_states: dict[bytes, StateRecord] = {}
    folded_versions: dict[bytes, VersionRecord] = {}
    for event in events:
        for op in event.ops:
            if op.purge:
                assert purges[event.commit_ts] == (op.namespace, op.agent_id, op.key)
                agent = storage_keys.agent_prefix(storage_keys.STATE, op.namespace, op.agent_id)
                start = agent + op.key.encode("utf-8")
                for raw in [k for k in folded_states if k.startswith(start)]:
                    del folded_states[raw]
                    key = raw[len(agent) :].decode("utf-8")
                    gone = storage_keys.version_key(op.namespace, op.agent_id, key, 0)[:-8]
                    for version_key in [k for k in folded_versions if k.startswith(gone)]:
                        del folded_versions[version_key]
                continue
            folded_states[storage_keys.state_key(op.namespace, op.agent_id, op.key)] = StateRecord(
                op.version, event.commit_ts, op.value
            )
            folded_versions[storage_keys.version_key(op.namespace, op.agent_id, op.key, op.version)] = (
                VersionRecord(event.commit_ts, op.value)
            )
    assert dict(states) == folded_states, "state differs from the fold of the log"
    assert dict(versions) == folded_versions, "version history differs from the fold of the log"
    return len(new)


def shrink(call: Caller, method: pbd.MethodDescriptor, raw: bytes, bad: grpc.StatusCode) -> bytes:
    """A smaller request that still gets `bad`: drop top-level fields and repeated items."""

    def still_bad(candidate: bytes) -> bool:
        return call(method, candidate)[0] == bad

    for _ in range(3):
        segments = split(raw)
        if not segments:
            return raw
        changed = False
        i = 0
        while i < len(segments):
            trial = b"".join(s.raw for j, s in enumerate(segments) if j != i)
            if still_bad(trial):
                raw, segments, changed = trial, segments[:i] + segments[i + 1 :], True
            else:
                i += 1
        try:
            message = request_class(method).FromString(raw)
        except DecodeError:
            return raw
        for target in [message, *(m for f, v in message.ListFields() if f.is_repeated for m in v)]:
            for f, value in target.ListFields():  # plainer names, where they do not matter
                if f.type == FD.TYPE_STRING and not f.is_repeated and value != "a":
                    setattr(target, f.name, "a")
                    if still_bad(message.SerializeToString()):
                        raw, changed = message.SerializeToString(), True
                    else:
                        setattr(target, f.name, value)
        for f in message.DESCRIPTOR.fields:
            if f.is_repeated and f.type == FD.TYPE_MESSAGE:
                items = getattr(message, f.name)
                i = 0
                while len(items) > 1 and i < len(items):
                    trial_message = type(message)()
                    trial_message.CopyFrom(message)
                    del getattr(trial_message, f.name)[i]
                    trial = trial_message.SerializeToString()
                    if still_bad(trial):
                        message, raw, changed = trial_message, trial, True
                        items = getattr(message, f.name)
                    else:
                        i += 1
        if not changed:
            break
    return raw


def python_bytes(data: bytes, limit: int = 1500) -> str:
    """`data` as a Python expression with repeats folded: b'[' * 1100 + b'1' + ..."""
    parts: list[str] = []
    plain = bytearray()
    i = 0
    while i < len(data):
        for period in range(1, 9):
            unit = data[i : i + period]
            times = 1
            while data[i + times * period : i + (times + 1) * period] == unit:
                times += 1
            if len(unit) == period and times >= 8:
                if plain:
                    parts.append(repr(bytes(plain)))
                    plain.clear()
                parts.append(f"{unit!r} * {times}")
                i += times * period
                break
        else:
            plain.append(data[i])
            i += 1
    if plain:
        parts.append(repr(bytes(plain)))
    text = " + ".join(parts) or "b''"
    return text if len(text) <= limit else text[:limit] + " ...(cut)"


def describe(method: pbd.MethodDescriptor, raw: bytes) -> str:
    try:
        message = request_class(method).FromString(raw)
    except DecodeError:
        return f"{len(raw)} bytes: {python_bytes(raw)} (not a valid {method.input_type.name})"
    return f"{len(raw)} bytes: {python_bytes(raw)}\n      = {readable(message)}"


def readable(message: Message) -> str:
    """A message as a constructor call, long bytes folded (text_format would print them whole)."""

    def one(f: pbd.FieldDescriptor, value: Any) -> str:
        if f.type == FD.TYPE_BYTES:
            return python_bytes(value, 300)
        if f.type == FD.TYPE_MESSAGE:
            if f.message_type.full_name.startswith("google.protobuf."):
                return f"<{text_format.MessageToString(value, as_one_line=True)[:200]}>"
            return readable(value)
        return repr(value)[:200]

    fields = []
    for f, value in message.ListFields():
        shown = f"[{', '.join(one(f, v) for v in value)}]" if f.is_repeated else one(f, value)
        fields.append(f"{f.name}={shown}")
    return f"{message.DESCRIPTOR.name}({', '.join(fields)})"


def test_fuzz_every_rpc(daemon: Daemon, channel: grpc.Channel) -> None:
    seed = int(os.environ.get("STATEHOUSE_FUZZ_SEED") or random.SystemRandom().randrange(1, 2**32))
    print(f"\nfuzz seed {seed} (rerun: STATEHOUSE_FUZZ_SEED={seed}), {TOTAL_CASES} cases")
    rng = random.Random(seed)
    call = Caller(channel)

    def begin(namespace: str, timeout_ms: int | None) -> str:
        request = pb.BeginTransactionRequest(namespace=namespace, timeout_ms=timeout_ms)
        code, details, replies = call(
            SERVICE.methods_by_name["BeginTransaction"], request.SerializeToString()
        )
        assert code == C.OK, details
        return pb.BeginTransactionResponse.FromString(replies[0]).txn_id

    txns = Txns(begin, rng)
    seed_data(call, txns)
    before = fingerprint(daemon)

    methods = list(SERVICE.methods)
    per_method = max(1, TOTAL_CASES // len(methods))
    counts: dict[str, collections.Counter[str]] = {m.name: collections.Counter() for m in methods}
    acked: set[int] = set()
    purges: dict[int, tuple[str, str, str]] = {}
    findings: list[Finding] = []
    started = time.monotonic()
    schedule = [m for m in methods for _ in range(per_method)]
    rng.shuffle(schedule)
    for n, method in enumerate(schedule, 1):
        roll = rng.random()
        if roll < 0.15:
            kind, raw = "random", random_bytes(rng)
        else:
            template = fill(request_class(method)(), rng, txns).SerializeToString()
            kind, raw = ("valid", template) if roll < 0.35 else mutate(template, method.input_type, rng)
        code, details, replies = call(method, raw)
        counts[method.name][code.name] += 1
        if code not in ALLOWED and len(findings) < 200:
            findings.append(Finding(method.name, code, details, kind, raw))
        if code == C.OK and method.name in ("Commit", "Stage", "CommitBatch"):
            note_commits(method.name, raw, replies[0], acked, txns.issued)
        if code == C.OK and method.name == "Purge":
            note_purge(raw, replies[0], purges)
        if code == C.OK and method.name == "BeginTransaction":
            txns.issued.add(pb.BeginTransactionResponse.FromString(replies[0]).txn_id)
        if n % HEALTH_EVERY == 0:
            assert healthy(call), f"the daemon stopped serving after {n} cases (seed {seed})"
    elapsed = time.monotonic() - started

    print(f"{len(schedule)} cases in {elapsed:.1f} s")
    for name, counter in counts.items():
        print(
            f"  {name:<18} {sum(counter.values()):>5}  "
            + ", ".join(f"{c}={k}" for c, k in counter.most_common())
        )

    assert healthy(call), "the daemon stopped serving"
    daemon.system.compact()  # type: ignore[union-attr]  # a retention pass now, whatever the timer did
    committed = check_store(daemon, before, acked, txns.issued, purges)
    # Retention did run: the seeded keys of "ns" had 3 versions or more, and it keeps 2.
    view = daemon.system.view()  # type: ignore[union-attr]
    for key in ("k", "k1", "key/with/slashes", "blob"):
        assert len(list(view.versions_of("ns", "a", key))) <= RETAIN["ns"]
    print(f"fuzzed commits that wrote (acknowledged, accounted for): {committed}")

    if findings:
        kinds: dict[tuple[str, str, str], list[Finding]] = {}
        for finding in findings:
            shape = re.sub(r"\d+", "N", finding.details)[:100]
            kinds.setdefault((finding.method, finding.code.name, shape), []).append(finding)
        report = []
        for (name, code, _), same in kinds.items():
            first = min(same, key=lambda f: len(f.request))
            method = SERVICE.methods_by_name[name]
            small = shrink(call, method, first.request, first.code)
            report.append(
                f"{name} -> {code} ({len(same)}x, e.g. from {first.kind}): {first.details[:300]}\n"
                f"    smallest request found: {describe(method, small)}"
            )
        pytest.fail(
            f"{len(findings)} responses outside {sorted(c.name for c in ALLOWED)} (seed {seed}):\n"
            + "\n".join(report)
        )
