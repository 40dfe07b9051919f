"""Conversions between the domain's values and the API's messages, shared by the servicers."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import timestamp_pb2
from pdvault.v1 import common_pb2

from vault.domain.types import PlainValue, ValueKind

__all__ = ["timestamp", "value_out"]


def timestamp(at: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(at)
    return ts


def value_out(value: PlainValue) -> common_pb2.Value:
    if value.kind is ValueKind.TEXT:
        return common_pb2.Value(text=value.data.reveal_text())
    return common_pb2.Value(binary=value.data.reveal())
