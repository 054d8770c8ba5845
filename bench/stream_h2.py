"""A minimal HTTP/2 reader for many gRPC server streams: the bench's subscriber side.

Why not grpc.aio: reading a server stream with it costs the client about as much CPU per
message as the server spends sending it (a read operation, a future and a task wake-up per
message), so on a 2-core machine the clients would saturate long before the server. This
reader is sans-IO (bytes in, bytes out): `Reader` drives the sockets itself, waits a little
after each wake-up so that one read takes many messages, and cuts them into frames and gRPC
messages with a few slices each.

It speaks exactly what a unary-request, server-streaming gRPC call needs over cleartext
HTTP/2 (prior knowledge): the preface and SETTINGS (acknowledged both ways), request
HEADERS (HPACK literals, never indexed: no encoder state), one DATA frame with the request
message, PING answers, and flow control opened wide (2^31−1 per stream, the connection
window topped up as data is read). Response headers are skipped, not decoded (no HPACK
decoder): a stream that ends early is reported as ended; the driver checks a stream with
grpc first, so refusals are seen with their status code there.
"""

from __future__ import annotations

import math
import selectors
import socket
import struct
import time
from collections.abc import Callable

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8
MAX_WINDOW = 2**31 - 1
_SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
_TOP_UP = 1 << 24  # bytes read before the connection window is topped up again

# (stream, message bytes) for each gRPC message received.
OnMessage = Callable[["Stream", bytes], None]


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream) + payload


def _hpack_int(value: int, prefix_bits: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((value,))
    out = bytearray((limit,))
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def _literal(name: str, value: str) -> bytes:
    """HPACK 'literal header field without indexing, new name', no Huffman."""
    n, v = name.encode(), value.encode()
    return b"\x00" + _hpack_int(len(n), 7) + n + _hpack_int(len(v), 7) + v


class Stream:
    __slots__ = ("buffer", "ended", "ended_at", "id", "messages", "tag")

    def __init__(self, stream_id: int, tag: object = None):
        self.id = stream_id
        self.tag = tag  # the caller's
        self.buffer = b""  # a partial gRPC message (rare: messages are small)
        self.messages = 0
        self.ended: str | None = None
        self.ended_at = math.inf

    def end(self, why: str) -> None:
        if self.ended is None:
            self.ended, self.ended_at = why, time.monotonic()


class Connection:
    """The HTTP/2 state of one connection (sans-IO): `feed` takes bytes read and returns
    bytes to write; every gRPC message goes to `on_message(stream, bytes)`."""

    def __init__(self, authority: str, on_message: OnMessage):
        self.authority = authority
        self.on_message = on_message
        self.streams: dict[int, Stream] = {}
        self.next_id = 1
        self.max_streams: float = math.inf
        self.settled = False  # the server's first SETTINGS arrived
        self.closed: str | None = None
        self._buffer = bytearray()
        self._unacked = 0

    def preface(self) -> bytes:
        settings = struct.pack(">HI", 0x2, 0) + struct.pack(">HI", 0x4, MAX_WINDOW)  # no push; wide window
        return (
            PREFACE
            + frame(SETTINGS, 0, 0, settings)
            + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", MAX_WINDOW - 65_535))
        )

    @property
    def room(self) -> float:
        return self.max_streams - len(self.streams)

    def start(
        self, path: str, request: bytes, metadata: tuple[tuple[str, str], ...], tag: object = None
    ) -> tuple[Stream, bytes]:
        stream_id, self.next_id = self.next_id, self.next_id + 2
        block = b"".join(
            [
                _literal(":method", "POST"),
                _literal(":scheme", "http"),
                _literal(":path", path),
                _literal(":authority", self.authority),
                _literal("content-type", "application/grpc"),
                _literal("te", "trailers"),
                *(_literal(k, v) for k, v in metadata),
            ]
        )
        message = b"\x00" + struct.pack(">I", len(request)) + request
        stream = self.streams[stream_id] = Stream(stream_id, tag)
        return stream, frame(HEADERS, END_HEADERS, stream_id, block) + frame(
            DATA, END_STREAM, stream_id, message
        )

    def lost(self, why: str) -> None:
        self.closed = why
        for stream in self.streams.values():
            stream.end(why)

    def feed(self, data: bytes) -> bytes:
        buffer = self._buffer
        buffer += data
        self._unacked += len(data)
        out: list[bytes] = []
        offset, size = 0, len(buffer)
        streams, deliver = self.streams, self.on_message
        while size - offset >= 9:
            length = (buffer[offset] << 16) | (buffer[offset + 1] << 8) | buffer[offset + 2]
            end = offset + 9 + length
            if end > size:
                break
            kind, flags = buffer[offset + 3], buffer[offset + 4]
            stream_id = int.from_bytes(buffer[offset + 5 : offset + 9], "big") & 0x7FFFFFFF
            start = offset + 9
            offset = end
            if kind == DATA:
                stream = streams.get(stream_id)
                if flags & PADDED:
                    start, end = start + 1, end - buffer[start]
                if stream is not None and end > start:
                    payload = stream.buffer + bytes(buffer[start:end]) if stream.buffer else buffer[start:end]
                    at, n = 0, len(payload)
                    while n - at >= 5:
                        m = int.from_bytes(payload[at + 1 : at + 5], "big")
                        if n - at - 5 < m:
                            break
                        stream.messages += 1
                        deliver(stream, bytes(payload[at + 5 : at + 5 + m]))
                        at += 5 + m
                    stream.buffer = bytes(payload[at:]) if at < n else b""
                if flags & END_STREAM and stream is not None:
                    stream.end("server ended the stream")
            elif kind == HEADERS:
                if flags & END_STREAM and stream_id in streams:
                    streams[stream_id].end("server ended the stream (trailers)")
            elif kind == SETTINGS:
                if not flags & ACK:
                    self._apply_settings(bytes(buffer[start:end]))
                    out.append(frame(SETTINGS, ACK, 0))
                    self.settled = True
            elif kind == PING:
                if not flags & ACK:
                    out.append(frame(PING, ACK, 0, bytes(buffer[start:end])))
            elif kind == RST_STREAM:
                if stream_id in streams:
                    code = int.from_bytes(buffer[start:end], "big")
                    streams[stream_id].end(f"RST_STREAM {code}")
            elif kind == GOAWAY:
                self.lost("GOAWAY")
        del buffer[:offset]
        if self._unacked >= _TOP_UP:
            out.append(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self._unacked)))
            self._unacked = 0
        return b"".join(out)

    def _apply_settings(self, payload: bytes) -> None:
        for at in range(0, len(payload) - 5, 6):
            ident, value = struct.unpack(">HI", payload[at : at + 6])
            if ident == _SETTINGS_MAX_CONCURRENT_STREAMS:
                self.max_streams = value


class Reader:
    """Blocking I/O for a set of Connections in one thread (no event loop).

    After each wake-up it waits `batch` seconds before reading, so a read takes every
    message that arrived meanwhile: a read per message would cost the client more than
    the messages themselves. Latency measured through it is pessimistic by up to `batch`.
    """

    def __init__(self, host: str, port: int, on_message: OnMessage, batch: float = 0.0005):
        self.host, self.port = host, port
        self.on_message = on_message
        self.batch = batch
        self.connections: list[Connection] = []
        self._sockets: dict[int, tuple[socket.socket, Connection]] = {}
        self._selector = selectors.DefaultSelector()

    def connect(self) -> Connection:
        sock = socket.create_connection((self.host, self.port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        conn = Connection(f"{self.host}:{self.port}", self.on_message)
        sock.sendall(conn.preface())
        sock.setblocking(False)
        self._sockets[sock.fileno()] = (sock, conn)
        self._selector.register(sock, selectors.EVENT_READ, conn)
        self.connections.append(conn)
        deadline = time.monotonic() + 30
        while not conn.settled:
            if time.monotonic() > deadline or conn.closed:
                raise ConnectionError(f"no SETTINGS from {self.host}:{self.port}: {conn.closed}")
            self.poll(0.1)
        return conn

    def send(self, conn: Connection, data: bytes) -> None:
        for sock, c in self._sockets.values():
            if c is conn:
                sock.setblocking(True)
                try:
                    sock.sendall(data)
                finally:
                    sock.setblocking(False)
                return

    def poll(self, timeout: float) -> int:
        """Wait up to `timeout` for data, then read what there is; returns bytes read."""
        ready = self._selector.select(timeout)
        if not ready:
            return 0
        if self.batch:
            time.sleep(self.batch)
        total = 0
        for key, _ in ready:
            sock, conn = self._sockets[key.fd]
            while True:
                try:
                    data = sock.recv(1 << 20)
                except BlockingIOError:
                    break
                except OSError as error:
                    data, why = b"", f"connection lost: {error}"
                else:
                    why = "connection closed by the server"
                if not data:
                    conn.lost(why)
                    self._selector.unregister(sock)
                    del self._sockets[key.fd]
                    sock.close()
                    break
                total += len(data)
                reply = conn.feed(data)
                if reply:
                    self.send(conn, reply)
                if len(data) < 1 << 20:
                    break
        return total

    def close(self) -> None:
        for sock, _ in self._sockets.values():
            sock.close()
        self._sockets.clear()
        self._selector.close()
