"""google.protobuf.Struct to plain JSON values, refusing what JSON cannot hold.

Struct numbers are doubles and may be NaN or Infinity, which neither JSON nor the JSON
columns of PostgreSQL accept: storing one would fail as an internal error, so they are
refused here, where the field can still be named.
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import struct_pb2


class NotJson(ValueError):
    """The Struct holds a value JSON cannot: the message says which kind."""


def _plain(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return {k: _plain(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_plain(v) for v in value.list_value.values]
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            raise NotJson("numbers must be finite (JSON has no NaN or Infinity)")
        return number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None  # null_value, or no kind set


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    return {k: _plain(v) for k, v in struct.fields.items()}
