"""`nexus events tail`: follow a tenant's events in the terminal, one JSON object a line.

A gRPC client of Subscribe. It resumes by itself when the server stops or the connection
drops (from the last event or heartbeat cursor), and with `--cursor-file` across runs: the
file holds the last sequence the terminal was given, written after every event.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf import duration_pb2, json_format

from nexus.events.v1 import events_service_pb2 as pb
from nexus_server.config import Settings

_SUBSCRIBE = "/nexus.events.v1.EventsService/Subscribe"
_RETRY_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL}


def add_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    events = sub.add_parser("events", help="the event log").add_subparsers(
        dest="events_command", required=True
    )
    events_tail = events.add_parser("tail", help="follow a tenant's events as JSON lines, resumably")
    _add_tail_arguments(events_tail)
    events_tail.set_defaults(fn=cmd_events_tail)


def cmd_events_tail(settings: Settings, args: argparse.Namespace) -> int:
    return run(args, args.address or f"{settings.host}:{settings.port}")


def _add_tail_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", help="server host:port (default: NEXUS_HOST:NEXUS_PORT)")
    parser.add_argument(
        "--key", default=os.environ.get("NEXUS_API_KEY", ""), help="API key (or NEXUS_API_KEY)"
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("NEXUS_ACCESS_TOKEN", ""),
        help="access token (or NEXUS_ACCESS_TOKEN)",
    )
    parser.add_argument("--tenant", default="", help="tenant id, for people who belong to several")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--after", type=int, help="start after this sequence (0: the whole log)")
    start.add_argument("--since", help="start at this time (ISO 8601, e.g. 2026-01-01T00:00:00Z)")
    parser.add_argument("--type", action="append", default=[], help="type pattern, e.g. deal.* (repeatable)")
    parser.add_argument("--source", action="append", default=[], help="source (repeatable)")
    parser.add_argument("--cursor-file", type=Path, help="resume from, and record progress in, this file")
    parser.add_argument("--heartbeats", action="store_true", help="print heartbeats to stderr")


def _metadata(args: argparse.Namespace) -> list[tuple[str, str]]:
    credential = args.key or args.token
    if not credential:
        sys.exit("nexus events tail: give --key or --token (or NEXUS_API_KEY / NEXUS_ACCESS_TOKEN)")
    metadata = [("authorization", f"Bearer {credential}")]
    if args.tenant:
        metadata.append(("x-tenant-id", args.tenant))
    return metadata


def _saved_cursor(path: Path | None) -> int | None:
    if path is None or not path.exists():
        return None
    text = path.read_text().strip()
    return int(text) if text.isdigit() else None


def _save_cursor(path: Path | None, cursor: int) -> None:
    if path is None:
        return
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(f"{cursor}\n")
    temporary.replace(path)  # atomic: a crash leaves the old cursor or the new one


async def tail(args: argparse.Namespace, address: str, out: TextIO = sys.stdout) -> int:
    metadata = _metadata(args)
    cursor = _saved_cursor(args.cursor_file)
    if cursor is None:
        cursor = args.after
    since = None
    if cursor is None and args.since:
        since = datetime.fromisoformat(args.since.replace("Z", "+00:00"))
    while True:
        # Batches make a long replay cheap on both ends; each event is still its own line.
        request = pb.SubscribeRequest(
            types=args.type,
            sources=args.source,
            heartbeat_interval=duration_pb2.Duration(seconds=5),
            max_batch=_BATCH,
        )
        if cursor is not None:
            request.after_sequence = cursor
        elif since is not None:
            request.since.FromDatetime(since)
        async with grpc.aio.insecure_channel(address) as channel:
            try:
                async for message in _subscribe(channel)(request, metadata=metadata):
                    kind = message.WhichOneof("kind")
                    if kind in ("event", "events"):
                        events = [message.event] if kind == "event" else list(message.events.events)
                        for event in events:
                            out.write(_json_line(event))
                        out.flush()
                        cursor = events[-1].sequence
                    else:
                        beat = message.heartbeat
                        cursor = beat.cursor_sequence if cursor is None else max(cursor, beat.cursor_sequence)
                        if args.heartbeats:
                            print(
                                f"heartbeat head={beat.head_sequence} cursor={cursor} lag={beat.lag}",
                                file=sys.stderr,
                            )
                    _save_cursor(args.cursor_file, cursor)
            except grpc.aio.AioRpcError as error:
                if error.code() not in _RETRY_CODES:
                    print(f"nexus events tail: {error.code().name}: {error.details()}", file=sys.stderr)
                    return 1
                print(f"nexus events tail: {error.code().name}; resuming after {cursor}", file=sys.stderr)
        await asyncio.sleep(1.0)


_BATCH = 100


def _json_line(event: Any) -> str:
    return json_format.MessageToJson(event, indent=None, preserving_proto_field_name=True) + "\n"


def _subscribe(channel: grpc.aio.Channel) -> Any:
    return channel.unary_stream(
        _SUBSCRIBE,
        request_serializer=pb.SubscribeRequest.SerializeToString,
        response_deserializer=pb.SubscribeResponse.FromString,
    )


def run(args: argparse.Namespace, address: str) -> int:
    try:
        return asyncio.run(tail(args, address))
    except KeyboardInterrupt:
        return 0
