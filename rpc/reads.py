"""Paged and historical reads: ListKeys, ScanPrefix, KeyHistory (time travel included).

Each function answers one request from one consistent `ReadView`.
"""

from __future__ import annotations

from rpc.convert import check_names, check_prefix
from statehouse._proto import statehouse_pb2 as pb
from storage import ReadView


def list_keys(view: ReadView, request: pb.ListKeysRequest) -> pb.ListKeysResponse:
    namespace = check_names(request.namespace, request.agent_id)
    return pb.ListKeysResponse(keys=list(view.keys(namespace, request.agent_id)))


def scan_prefix(view: ReadView, request: pb.ScanPrefixRequest) -> pb.ScanPrefixResponse:
    from rpc.servicer import _fill_value  # placeholder until this module is filled in

    namespace = check_names(request.namespace, request.agent_id)
    check_prefix(request.prefix)
    response = pb.ScanPrefixResponse()
    for key, record in view.scan(namespace, request.agent_id, request.prefix):
        entry = response.entries.add(key=key, version=record.version, commit_ts=record.commit_ts)
        _fill_value(entry, key, record.value, request.json_values)
    return response


def key_history(view: ReadView, request: pb.KeyHistoryRequest) -> pb.KeyHistoryResponse:
    raise NotImplementedError("KeyHistory")
