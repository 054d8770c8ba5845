"""JSON log lines on stderr: one object a line, with the request id where there is one.

The access log writes a line for every call, so its path is kept lean (measured: the
stdlib's datetime formatting and a write per line were about half of the line's cost):
timestamps reuse the formatted second, and access lines are written in batches (errors and
every other logger's lines are written at once).
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import sys
import threading
import time
from datetime import UTC, datetime
from typing import IO, Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
# json.dumps(entry, default=str), without building a new encoder for every line.
_encode = json.JSONEncoder(default=str).encode
# The C string escaper json.dumps uses (ensure_ascii): the access line quotes its strings with it.
_quote: Any = json.encoder.encode_basestring_ascii

ACCESS_LOGGER = "nexus.access"
# Batched access lines reach the stream at least this often (Envoy's access log: 1 s).
FLUSH_INTERVAL = 0.1
_FLUSH_BYTES = 64 * 1024


class _Clock:
    """ISO-8601 UTC timestamps with milliseconds; the date-and-second part is formatted once
    a second rather than on every line."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def iso(self, created: float) -> str:
        ms = int(created * 1000)
        second = ms // 1000
        if second != self._second:
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second = second
        return f"{self._prefix}.{ms % 1000:03d}+00:00"


_clock = _Clock()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _clock.iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encode(entry)


class JsonLinesHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """StreamHandler that batches access-log lines: they are written when the batch reaches
    64 KiB, every FLUSH_INTERVAL seconds, at any other line, and at exit. A crash loses at
    most FLUSH_INTERVAL of access lines, never an error or a lifecycle line.

    Access lines that come through `emit_access` are also formatted in the batch, not on the
    call: in the middle of a call the formatting code runs cold (measured in-process: about a
    fifth of an API-key call's Python, against a sixth of that for the same lines formatted
    together)."""

    def __init__(self, stream: IO[str] | None = None):
        super().__init__(stream if stream is not None else sys.stderr)
        # Lines, or (time, level, fields) of access lines still to be formatted.
        self._pending: list[str | tuple[float, int, dict[str, Any]]] = []
        self._pending_bytes = 0
        self._flusher: threading.Thread | None = None
        self._closed = False
        atexit.register(self.flush)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            self._add(line, len(line), record.name != ACCESS_LOGGER or record.levelno >= logging.WARNING)
        except Exception:
            self.handleError(record)

    def emit_access(self, levelno: int, fields: dict[str, Any]) -> None:
        """An access line without a LogRecord: the line JsonFormatter would write for one
        with these extra fields (None left out). Only when this handler alone sees the
        access logger's lines (`sole_handler`). `fields` must not change afterwards."""
        if levelno < self.level:
            return
        self._add((time.time(), levelno, fields), _ACCESS_LINE_BYTES, levelno >= logging.WARNING)

    def _add(self, line: str | tuple[float, int, dict[str, Any]], size: int, urgent: bool) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._pending.append(line)
            if urgent:
                self._write_pending()
                return
            self._pending_bytes += size
            if self._pending_bytes >= _FLUSH_BYTES:
                self._write_pending()
            elif self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_loop, name="log-flush", daemon=True)
                self._flusher.start()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()

    def close(self) -> None:
        self.flush()
        self._closed = True
        super().close()

    def _write_pending(self) -> None:
        if not self._pending:
            return
        text = "".join([line if type(line) is str else access_line(*line) for line in self._pending])
        self._pending.clear()
        self._pending_bytes = 0
        try:
            self.stream.write(text)
            self.stream.flush()
        except ValueError:
            pass  # the stream was closed under us (interpreter exit): nothing to write to

    def _flush_loop(self) -> None:
        while not self._closed:
            time.sleep(FLUSH_INTERVAL)
            self.flush()


def access_line(created: float, levelno: int, fields: dict[str, Any]) -> str:
    """The line JsonFormatter writes for an access record with these extra fields, built by
    hand with json's own string escaper (encoding a dict costs twice as much)."""
    head = _ACCESS_HEADS.get(levelno)
    if head is None:
        level = _quote(logging.getLevelName(levelno).lower())
        head = _ACCESS_HEADS[levelno] = f'", "level": {level}, "logger": "{ACCESS_LOGGER}", "message": "rpc"'
    parts = ['{"time": "', _clock.iso(created), head]
    for key, value in fields.items():
        if value is None:
            continue
        kind = type(value)
        if kind is str:
            text = _quote(value)
        elif kind is int or (kind is float and math.isfinite(value)):
            text = repr(value)
        else:
            text = _encode(value)  # bool, containers, NaN: as json.dumps would
        name = _ACCESS_KEYS.get(key)
        if name is None:
            name = _ACCESS_KEYS[key] = f", {_quote(key)}: "
        parts.append(name)
        parts.append(text)
    parts.append("}\n")
    return "".join(parts)


_ACCESS_LINE_BYTES = 250  # about an access line's length, for the batch's size bound
# The fixed part of an access line after its time, per level.
_ACCESS_HEADS: dict[int, str] = {}
# `, "name": ` per field name (access lines have a handful of names).
_ACCESS_KEYS: dict[str, str] = {}


def sole_handler(logger: logging.Logger) -> JsonLinesHandler | None:
    """The JsonLinesHandler (with JsonFormatter, no filters) that alone receives `logger`'s
    lines, or None when anything else would see them too (another handler, a filter: tests'
    capture, an operator's own setup). Then a line may skip the LogRecord."""
    found: JsonLinesHandler | None = None
    if logger.filters:
        return None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if found is not None or type(handler) is not JsonLinesHandler or handler.filters:
                return None
            if type(handler.formatter) is not JsonFormatter:
                return None
            found = handler
        current = current.parent if current.propagate else None
    return found


def configure(level: str = "INFO") -> None:
    handler = JsonLinesHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request at INFO: the webhook sender's deliveries have a log of their
    # own (the delivery log), and a line per POST cost 5% of its CPU.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
