"""The JSON log handler: one object a line, access lines batched, everything else at once."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from nexus_server import logs


@pytest.fixture
def handler() -> Iterator[tuple[logs.JsonLinesHandler, io.StringIO]]:
    stream = io.StringIO()
    h = logs.JsonLinesHandler(stream)
    h.setFormatter(logs.JsonFormatter())
    yield h, stream
    h.close()


def _record(name: str, level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord(name, level, __file__, 1, "rpc", (), None)
    record.__dict__.update(extra)
    return record


def test_a_line_carries_time_level_logger_message_and_extra_fields(
    handler: tuple[logs.JsonLinesHandler, io.StringIO],
) -> None:
    h, stream = handler
    before = datetime.now(UTC)
    h.handle(_record("nexus", request_id="req_1", method="/x.Y/Z", empty=None))
    entry = json.loads(stream.getvalue())
    assert entry["level"] == "info" and entry["logger"] == "nexus" and entry["message"] == "rpc"
    assert entry["request_id"] == "req_1" and entry["method"] == "/x.Y/Z"
    assert "empty" not in entry  # None fields are left out
    stamp = datetime.fromisoformat(entry["time"])
    assert stamp.tzinfo is not None and abs((stamp - before).total_seconds()) < 1.0


def test_the_cached_second_never_changes_a_timestamp() -> None:
    clock = logs._Clock()
    for created in (1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.5, 1_700_000_000.25, 1_800_000_000.042):
        expected = datetime.fromtimestamp(int(created), UTC).strftime("%Y-%m-%dT%H:%M:%S")
        assert clock.iso(created) == f"{expected}.{int(round(created % 1, 6) * 1000):03d}+00:00"


def test_access_lines_wait_for_the_batch_and_other_lines_do_not(
    handler: tuple[logs.JsonLinesHandler, io.StringIO],
) -> None:
    h, stream = handler
    h.handle(_record(logs.ACCESS_LOGGER, request_id="req_a"))
    assert stream.getvalue() == ""  # batched
    h.handle(_record("nexus", message_kind="lifecycle"))
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    # Any other line writes the batch first, so lines keep their order.
    assert [line["logger"] for line in lines] == [logs.ACCESS_LOGGER, "nexus"]


def test_an_access_warning_is_written_at_once(handler: tuple[logs.JsonLinesHandler, io.StringIO]) -> None:
    h, stream = handler
    h.handle(_record(logs.ACCESS_LOGGER, level=logging.WARNING, request_id="req_w"))
    assert json.loads(stream.getvalue())["request_id"] == "req_w"


def test_batched_access_lines_reach_the_stream_within_the_flush_interval(
    handler: tuple[logs.JsonLinesHandler, io.StringIO],
) -> None:
    h, stream = handler
    h.handle(_record(logs.ACCESS_LOGGER, request_id="req_late"))
    deadline = time.monotonic() + logs.FLUSH_INTERVAL * 10
    while not stream.getvalue() and time.monotonic() < deadline:
        time.sleep(logs.FLUSH_INTERVAL / 4)
    assert json.loads(stream.getvalue())["request_id"] == "req_late"


def test_closing_writes_what_is_pending() -> None:
    stream = io.StringIO()
    h = logs.JsonLinesHandler(stream)
    h.setFormatter(logs.JsonFormatter())
    h.handle(_record(logs.ACCESS_LOGGER, request_id="req_close"))
    h.close()
    assert json.loads(stream.getvalue())["request_id"] == "req_close"


def test_an_access_line_without_a_record_is_the_line_a_record_makes(
    handler: tuple[logs.JsonLinesHandler, io.StringIO],
) -> None:
    h, stream = handler
    fields: dict[str, Any] = {
        "request_id": 'req_"1\\é\u2028\x00',  # quotes, escapes, non-ASCII, a control character
        "method": "/x.Y/Z",
        "code": "OK",
        "reason": None,
        "duration_ms": 1.5,
        "calls": 3,
        "cached": True,
        "ratio": float("nan"),
    }
    h.handle(_record(logs.ACCESS_LOGGER, **fields))
    h.emit_access(logging.INFO, fields)
    h.flush()
    by_record, direct = stream.getvalue().splitlines()
    # The same text, byte for byte, but for the time (milliseconds may differ).
    assert by_record[:16] == direct[:16] and by_record[39:] == direct[39:]
    assert list(json.loads(by_record)) == list(json.loads(direct))


def test_the_direct_path_is_taken_only_when_nothing_else_would_see_the_line() -> None:
    root, access = logging.getLogger(), logging.getLogger(logs.ACCESS_LOGGER)
    saved = root.handlers[:]
    mine = logs.JsonLinesHandler(io.StringIO())
    mine.setFormatter(logs.JsonFormatter())
    try:
        root.handlers[:] = [mine]
        assert logs.sole_handler(access) is mine
        capture = logging.Handler()  # a test's capture, an operator's extra handler
        root.addHandler(capture)
        assert logs.sole_handler(access) is None
        root.removeHandler(capture)
        mine.addFilter(lambda record: True)
        assert logs.sole_handler(access) is None
    finally:
        root.handlers[:] = saved
        mine.close()
