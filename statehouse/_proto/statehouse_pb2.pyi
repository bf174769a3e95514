from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNKNOWN: _ClassVar[ErrorCode]
    INVALID_REQUEST: _ClassVar[ErrorCode]
    TXN_NOT_FOUND: _ClassVar[ErrorCode]
    TXN_EXPIRED: _ClassVar[ErrorCode]
    TXN_ALREADY_COMMITTED: _ClassVar[ErrorCode]
    KEY_NOT_FOUND: _ClassVar[ErrorCode]
    VERSION_NOT_FOUND: _ClassVar[ErrorCode]
    STORAGE_ERROR: _ClassVar[ErrorCode]
    INTERNAL_ERROR: _ClassVar[ErrorCode]
UNKNOWN: ErrorCode
INVALID_REQUEST: ErrorCode
TXN_NOT_FOUND: ErrorCode
TXN_EXPIRED: ErrorCode
TXN_ALREADY_COMMITTED: ErrorCode
KEY_NOT_FOUND: ErrorCode
VERSION_NOT_FOUND: ErrorCode
STORAGE_ERROR: ErrorCode
INTERNAL_ERROR: ErrorCode

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: str
    def __init__(self, status: _Optional[str] = ...) -> None: ...

class VersionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VersionResponse(_message.Message):
    __slots__ = ("version", "git_sha", "http_addr")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    GIT_SHA_FIELD_NUMBER: _ClassVar[int]
    HTTP_ADDR_FIELD_NUMBER: _ClassVar[int]
    version: str
    git_sha: str
    http_addr: str
    def __init__(self, version: _Optional[str] = ..., git_sha: _Optional[str] = ..., http_addr: _Optional[str] = ...) -> None: ...

class BeginTransactionRequest(_message.Message):
    __slots__ = ("timeout_ms", "namespace")
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    timeout_ms: int
    namespace: str
    def __init__(self, timeout_ms: _Optional[int] = ..., namespace: _Optional[str] = ...) -> None: ...

class BeginTransactionResponse(_message.Message):
    __slots__ = ("txn_id", "timeout_ms")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    timeout_ms: int
    def __init__(self, txn_id: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class WriteRequest(_message.Message):
    __slots__ = ("txn_id", "namespace", "agent_id", "key", "value", "value_json")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    namespace: str
    agent_id: str
    key: str
    value: _struct_pb2.Struct
    value_json: bytes
    def __init__(self, txn_id: _Optional[str] = ..., namespace: _Optional[str] = ..., agent_id: _Optional[str] = ..., key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., value_json: _Optional[bytes] = ...) -> None: ...

class WriteResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("txn_id", "namespace", "agent_id", "key")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    namespace: str
    agent_id: str
    key: str
    def __init__(self, txn_id: _Optional[str] = ..., namespace: _Optional[str] = ..., agent_id: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Mutation(_message.Message):
    __slots__ = ("namespace", "agent_id", "key", "value_json", "delete", "expected_version", "value_bytes", "if_absent")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    VALUE_BYTES_FIELD_NUMBER: _ClassVar[int]
    IF_ABSENT_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    agent_id: str
    key: str
    value_json: bytes
    delete: bool
    expected_version: int
    value_bytes: bytes
    if_absent: bool
    def __init__(self, namespace: _Optional[str] = ..., agent_id: _Optional[str] = ..., key: _Optional[str] = ..., value_json: _Optional[bytes] = ..., delete: _Optional[bool] = ..., expected_version: _Optional[int] = ..., value_bytes: _Optional[bytes] = ..., if_absent: _Optional[bool] = ...) -> None: ...

class Condition(_message.Message):
    __slots__ = ("namespace", "agent_id", "key", "expected_version")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    agent_id: str
    key: str
    expected_version: int
    def __init__(self, namespace: _Optional[str] = ..., agent_id: _Optional[str] = ..., key: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class Conflict(_message.Message):
    __slots__ = ("namespace", "agent_id", "key", "expected_version", "actual_version", "exists")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_VERSION_FIELD_NUMBER: _ClassVar[int]
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    agent_id: str
    key: str
    expected_version: int
    actual_version: int
    exists: bool
    def __init__(self, namespace: _Optional[str] = ..., agent_id: _Optional[str] = ..., key: _Optional[str] = ..., expected_version: _Optional[int] = ..., actual_version: _Optional[int] = ..., exists: _Optional[bool] = ...) -> None: ...

class StageRequest(_message.Message):
    __slots__ = ("txn_id", "mutations", "open", "conditions", "attempt")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    MUTATIONS_FIELD_NUMBER: _ClassVar[int]
    OPEN_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    mutations: _containers.RepeatedCompositeFieldContainer[Mutation]
    open: TxnOpen
    conditions: _containers.RepeatedCompositeFieldContainer[Condition]
    attempt: str
    def __init__(self, txn_id: _Optional[str] = ..., mutations: _Optional[_Iterable[_Union[Mutation, _Mapping]]] = ..., open: _Optional[_Union[TxnOpen, _Mapping]] = ..., conditions: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., attempt: _Optional[str] = ...) -> None: ...

class TxnOpen(_message.Message):
    __slots__ = ("timeout_ms",)
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    timeout_ms: int
    def __init__(self, timeout_ms: _Optional[int] = ...) -> None: ...

class StageResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("txn_id", "mutations", "open", "conditions", "attempt")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    MUTATIONS_FIELD_NUMBER: _ClassVar[int]
    OPEN_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    mutations: _containers.RepeatedCompositeFieldContainer[Mutation]
    open: TxnOpen
    conditions: _containers.RepeatedCompositeFieldContainer[Condition]
    attempt: str
    def __init__(self, txn_id: _Optional[str] = ..., mutations: _Optional[_Iterable[_Union[Mutation, _Mapping]]] = ..., open: _Optional[_Union[TxnOpen, _Mapping]] = ..., conditions: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., attempt: _Optional[str] = ...) -> None: ...

class CommitBatchRequest(_message.Message):
    __slots__ = ("commits",)
    COMMITS_FIELD_NUMBER: _ClassVar[int]
    commits: _containers.RepeatedCompositeFieldContainer[CommitRequest]
    def __init__(self, commits: _Optional[_Iterable[_Union[CommitRequest, _Mapping]]] = ...) -> None: ...

class CommitOutcome(_message.Message):
    __slots__ = ("commit_ts", "code", "message", "conflict")
    COMMIT_TS_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CONFLICT_FIELD_NUMBER: _ClassVar[int]
    commit_ts: int
    code: int
    message: str
    conflict: Conflict
    def __init__(self, commit_ts: _Optional[int] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., conflict: _Optional[_Union[Conflict, _Mapping]] = ...) -> None: ...

class CommitBatchResponse(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[CommitOutcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[CommitOutcome, _Mapping]]] = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ("commit_ts",)
    COMMIT_TS_FIELD_NUMBER: _ClassVar[int]
    commit_ts: int
    def __init__(self, commit_ts: _Optional[int] = ...) -> None: ...

class AbortRequest(_message.Message):
    __slots__ = ("txn_id", "attempt")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    attempt: str
    def __init__(self, txn_id: _Optional[str] = ..., attempt: _Optional[str] = ...) -> None: ...

class AbortResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStateRequest(_message.Message):
    __slots__ = ("namespace", "agent_id", "key", "json_values", "bytes_values")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    JSON_VALUES_FIELD_NUMBER: _ClassVar[int]
    BYTES_VALUES_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    agent_id: str
    key: str
    json_values: bool
    bytes_values: bool
    def __init__(self, namespace: _Optional[str] = ..., agent_id: _Optional[str] = ..., key: _Optional[str] = ..., json_values: _Optional[bool] = ..., bytes_values: _Optional[bool] = ...) -> None: ...

class GetStateResponse(_message.Message):
    __slots__ = ("value", "version", "commit_ts", "exists", "value_json", "value_bytes")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COMMIT_TS_FIELD_NUMBER: _ClassVar[int]
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    VALUE_BYTES_FIELD_NUMBER: _ClassVar[int]
    value: _struct_pb2.Struct
    version: int
    commit_ts: int
    exists: bool
    value_json: bytes
    value_bytes: bytes
    def __init__(self, value: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., version: _Optional[int] = ..., commit_ts: _Optional[int] = ..., exists: _Optional[bool] = ..., value_json: _Optional[bytes] = ..., value_bytes: _Optional[bytes] = ...) -> None: ...

class GetStateAtVersionRequest(_message.Message):
    __slots__ = ("namespace", "agent_id", "key", "version", "json_values", "bytes_values")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    JSON_VALUES_FIELD_NUMBER: _ClassVar[int]
    BYTES_VALUES_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    agent_id: str
    key: str
    version: int
    json_values: bool
    bytes_values: bool
    def __init__(self, namespace: _Optional[str] = ..., agent_id: _Optional[str] = ..., key: _Optional[str] = ..., version: _Optional[int] = ..., json_values: _Optional[bool] = ..., bytes_values: _Optional[bool] = ...) -> None: ...

class GetStateAtVersionResponse(_message.Message):
    __slots__ = ("value", "version", "commit_ts", "exists", "value_json", "value_bytes")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COMMIT_TS_FIELD_NUMBER: _ClassVar[int]
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    VALUE_BYTES_FIELD_NUMBER: _ClassVar[int]
    value: _struct_pb2.Struct
    version: int
    commit_ts: int
    exists: bool
    value_json: bytes
    value_bytes: bytes
    def __init__(self, value: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., version: _Optional[int] = ..., commit_ts: _Optional[int] = ..., exists: _Optional[bool] = ..., value_json: _Optional[bytes] = ..., value_bytes: _Optional[bytes] = ...) -> None: ...

class ReadRequest(_message.Message):
    __slots__ = ("latest", "at_version")
    LATEST_FIELD_NUMBER: _ClassVar[int]
    AT_VERSION_FIELD_NUMBER: _ClassVar[int]
    latest: GetStateRequest
    at_version: GetStateAtVersionRequest
    def __init__(self, latest: _Optional[_Union[GetStateRequest, _Mapping]] = ..., at_version: _Optional[_Union[GetStateAtVersionRequest, _Mapping]] = ...) -> None: ...

class ReadBatchRequest(_message.Message):
    __slots__ = ("reads", "at_commit_ts")
    READS_FIELD_NUMBER: _ClassVar[int]
    AT_COMMIT_TS_FIELD_NUMBER: _ClassVar[int]
    reads: _containers.RepeatedCompositeFieldContainer[ReadRequest]
    at_commit_ts: int
    def __init__(self, reads: _Optional[_Iterable[_Union[ReadRequest, _Mapping]]] = ..., at_commit_ts: _Optional[int] = ...) -> None: ...

class ReadOutcome(_message.Message):
    __slots__ = ("state", "code", "message", "horizon")
    STATE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    HORIZON_FIELD_NUMBER: _ClassVar[int]
    state: GetStateResponse
    code: int
    message: str
    horizon: int
    def __init__(self, state: _Optional[_Union[GetStateResponse, _Mapping]] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., horizon: _Optional[int] = ...) -> None: ...

class ReadBatchResponse(_message.Message):
    __slots__ = ("outcomes", "commit_ts")
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    COMMIT_TS_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[ReadOutcome]
    commit_ts: int
    def __init__(self, outcomes: _Optional[_Iterable[_Union[ReadOutcome, _Mapping]]] = ..., commit_ts: _Optional[int] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ("namespace", "agent_id", "limit", "page_token", "at_commit_ts", "prefix", "reverse", "start_after")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    AT_COMMIT_TS_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    REVERSE_FIELD_NUMBER: _ClassVar[int]
    START_AFTER_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    agent_id: str
    limit: int
    page_token: str
    at_commit_ts: int
    prefix: str
    reverse: bool
    start_after: str
    def __init__(self, namespace: _Optional[str] = ..., agent_id: _Optional[str] = ..., limit: _Optional[int] = ..., page_token: _Optional[str] = ..., at_commit_ts: _Optional[int] = ..., prefix: _Optional[str] = ..., reverse: _Optional[bool] = ..., start_after: _Optional[str] = ...) -> None: ...

class ListKeysResponse(_message.Message):
    __slots__ = ("keys", "next_page_token", "commit_ts")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    COMMIT_TS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    next_page_token: str
    commit_ts: int
    def __init__(self, keys: _Optional[_Iterable[str]] = ..., next_page_token: _Optional[str] = ..., commit_ts: _Optional[int] = ...) -> None: ...

class ScanPrefixRequest(_message.Message):
    __slots__ = ("namespace", "agent_id", "prefix", "json_values", "limit", "page_token", "at_commit_ts", "bytes_values", "reverse", "start_after")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    JSON_VALUES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    AT_COMMIT_TS_FIELD_NUMBER: _ClassVar[int]
    BYTES_VALUES_FIELD_NUMBER: _ClassVar[int]
    REVERSE_FIELD_NUMBER: _ClassVar[int]
    START_AFTER_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    agent_id: str
    prefix: str
    json_values: bool
    limit: int
    page_token: str
    at_commit_ts: int
    bytes_values: bool
    reverse: bool
    start_after: str
    def __init__(self, namespace: _Optional[str] = ..., agent_id: _Optional[str] = ..., prefix: _Optional[str] = ..., json_values: _Optional[bool] = ..., limit: _Optional[int] = ..., page_token: _Optional[str] = ..., at_commit_ts: _Optional[int] = ..., bytes_values: _Optional[bool] = ..., reverse: _Optional[bool] = ..., start_after: _Optional[str] = ...) -> None: ...

class ScanPrefixResponse(_message.Message):
    __slots__ = ("entries", "next_page_token", "commit_ts")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    COMMIT_TS_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[StateEntry]
    next_page_token: str
    commit_ts: int
    def __init__(self, entries: _Optional[_Iterable[_Union[StateEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., commit_ts: _Optional[int] = ...) -> None: ...

class KeyHistoryRequest(_message.Message):
    __slots__ = ("namespace", "agent_id", "key", "limit", "page_token", "json_values", "bytes_values")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    JSON_VALUES_FIELD_NUMBER: _ClassVar[int]
    BYTES_VALUES_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    agent_id: str
    key: str
    limit: int
    page_token: str
    json_values: bool
    bytes_values: bool
    def __init__(self, namespace: _Optional[str] = ..., agent_id: _Optional[str] = ..., key: _Optional[str] = ..., limit: _Optional[int] = ..., page_token: _Optional[str] = ..., json_values: _Optional[bool] = ..., bytes_values: _Optional[bool] = ...) -> None: ...

class KeyVersion(_message.Message):
    __slots__ = ("version", "commit_ts", "deleted", "value", "value_json", "committed_at_ms", "value_bytes")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COMMIT_TS_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    VALUE_BYTES_FIELD_NUMBER: _ClassVar[int]
    version: int
    commit_ts: int
    deleted: bool
    value: _struct_pb2.Struct
    value_json: bytes
    committed_at_ms: int
    value_bytes: bytes
    def __init__(self, version: _Optional[int] = ..., commit_ts: _Optional[int] = ..., deleted: _Optional[bool] = ..., value: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., value_json: _Optional[bytes] = ..., committed_at_ms: _Optional[int] = ..., value_bytes: _Optional[bytes] = ...) -> None: ...

class KeyHistoryResponse(_message.Message):
    __slots__ = ("versions", "next_page_token")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[KeyVersion]
    next_page_token: str
    def __init__(self, versions: _Optional[_Iterable[_Union[KeyVersion, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("namespace", "agent_id", "key_prefix", "start_ts", "json_values", "bytes_values")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_PREFIX_FIELD_NUMBER: _ClassVar[int]
    START_TS_FIELD_NUMBER: _ClassVar[int]
    JSON_VALUES_FIELD_NUMBER: _ClassVar[int]
    BYTES_VALUES_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    agent_id: str
    key_prefix: str
    start_ts: int
    json_values: bool
    bytes_values: bool
    def __init__(self, namespace: _Optional[str] = ..., agent_id: _Optional[str] = ..., key_prefix: _Optional[str] = ..., start_ts: _Optional[int] = ..., json_values: _Optional[bool] = ..., bytes_values: _Optional[bool] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("events", "progress_ts")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_TS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[ReplayEvent]
    progress_ts: int
    def __init__(self, events: _Optional[_Iterable[_Union[ReplayEvent, _Mapping]]] = ..., progress_ts: _Optional[int] = ...) -> None: ...

class StateEntry(_message.Message):
    __slots__ = ("key", "value", "version", "commit_ts", "value_json", "value_bytes")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COMMIT_TS_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    VALUE_BYTES_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: _struct_pb2.Struct
    version: int
    commit_ts: int
    value_json: bytes
    value_bytes: bytes
    def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., version: _Optional[int] = ..., commit_ts: _Optional[int] = ..., value_json: _Optional[bytes] = ..., value_bytes: _Optional[bytes] = ...) -> None: ...

class ReplayRequest(_message.Message):
    __slots__ = ("namespace", "agent_id", "start_ts", "end_ts", "json_values", "bytes_values")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    START_TS_FIELD_NUMBER: _ClassVar[int]
    END_TS_FIELD_NUMBER: _ClassVar[int]
    JSON_VALUES_FIELD_NUMBER: _ClassVar[int]
    BYTES_VALUES_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    agent_id: str
    start_ts: int
    end_ts: int
    json_values: bool
    bytes_values: bool
    def __init__(self, namespace: _Optional[str] = ..., agent_id: _Optional[str] = ..., start_ts: _Optional[int] = ..., end_ts: _Optional[int] = ..., json_values: _Optional[bool] = ..., bytes_values: _Optional[bool] = ...) -> None: ...

class ReplayEvent(_message.Message):
    __slots__ = ("txn_id", "commit_ts", "operations", "committed_at_ms", "agent_id")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    COMMIT_TS_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    commit_ts: int
    operations: _containers.RepeatedCompositeFieldContainer[Operation]
    committed_at_ms: int
    agent_id: str
    def __init__(self, txn_id: _Optional[str] = ..., commit_ts: _Optional[int] = ..., operations: _Optional[_Iterable[_Union[Operation, _Mapping]]] = ..., committed_at_ms: _Optional[int] = ..., agent_id: _Optional[str] = ...) -> None: ...

class ReplayBatch(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[ReplayEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[ReplayEvent, _Mapping]]] = ...) -> None: ...

class Operation(_message.Message):
    __slots__ = ("key", "value", "version", "value_json", "deleted", "value_bytes", "purged")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    VALUE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PURGED_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: _struct_pb2.Struct
    version: int
    value_json: bytes
    deleted: bool
    value_bytes: bytes
    purged: bool
    def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., version: _Optional[int] = ..., value_json: _Optional[bytes] = ..., deleted: _Optional[bool] = ..., value_bytes: _Optional[bytes] = ..., purged: _Optional[bool] = ...) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = ("namespace", "prefix", "limit", "start_after", "page_token", "reverse")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    START_AFTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REVERSE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    prefix: str
    limit: int
    start_after: str
    page_token: str
    reverse: bool
    def __init__(self, namespace: _Optional[str] = ..., prefix: _Optional[str] = ..., limit: _Optional[int] = ..., start_after: _Optional[str] = ..., page_token: _Optional[str] = ..., reverse: _Optional[bool] = ...) -> None: ...

class ListAgentsResponse(_message.Message):
    __slots__ = ("agent_ids", "next_page_token", "commit_ts")
    AGENT_IDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    COMMIT_TS_FIELD_NUMBER: _ClassVar[int]
    agent_ids: _containers.RepeatedScalarFieldContainer[str]
    next_page_token: str
    commit_ts: int
    def __init__(self, agent_ids: _Optional[_Iterable[str]] = ..., next_page_token: _Optional[str] = ..., commit_ts: _Optional[int] = ...) -> None: ...

class PurgeRequest(_message.Message):
    __slots__ = ("namespace", "agent_id", "key_prefix")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_PREFIX_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    agent_id: str
    key_prefix: str
    def __init__(self, namespace: _Optional[str] = ..., agent_id: _Optional[str] = ..., key_prefix: _Optional[str] = ...) -> None: ...

class PurgeResponse(_message.Message):
    __slots__ = ("commit_ts", "keys_purged", "events_rewritten")
    COMMIT_TS_FIELD_NUMBER: _ClassVar[int]
    KEYS_PURGED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_REWRITTEN_FIELD_NUMBER: _ClassVar[int]
    commit_ts: int
    keys_purged: int
    events_rewritten: int
    def __init__(self, commit_ts: _Optional[int] = ..., keys_purged: _Optional[int] = ..., events_rewritten: _Optional[int] = ...) -> None: ...

class CompactRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CompactResponse(_message.Message):
    __slots__ = ("duration_ms",)
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    duration_ms: int
    def __init__(self, duration_ms: _Optional[int] = ...) -> None: ...

class CreateSnapshotRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreateSnapshotResponse(_message.Message):
    __slots__ = ("path", "commit_ts")
    PATH_FIELD_NUMBER: _ClassVar[int]
    COMMIT_TS_FIELD_NUMBER: _ClassVar[int]
    path: str
    commit_ts: int
    def __init__(self, path: _Optional[str] = ..., commit_ts: _Optional[int] = ...) -> None: ...

class SessionRequest(_message.Message):
    __slots__ = ("id", "method", "request", "timeout_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    id: int
    method: str
    request: bytes
    timeout_ms: int
    def __init__(self, id: _Optional[int] = ..., method: _Optional[str] = ..., request: _Optional[bytes] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class SessionResponse(_message.Message):
    __slots__ = ("id", "code", "message", "response", "trailers")
    ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    TRAILERS_FIELD_NUMBER: _ClassVar[int]
    id: int
    code: int
    message: str
    response: bytes
    trailers: _containers.RepeatedCompositeFieldContainer[SessionTrailer]
    def __init__(self, id: _Optional[int] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., response: _Optional[bytes] = ..., trailers: _Optional[_Iterable[_Union[SessionTrailer, _Mapping]]] = ...) -> None: ...

class SessionTrailer(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: bytes
    def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
