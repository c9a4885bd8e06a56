"""dnstap output: the queries and responses of the data plane, as NSD, Knot and BIND log them.

`dnstap <https://dnstap.info>`_ is protobuf messages (``dnstap.proto``: a ``Dnstap`` envelope
holding a ``Message`` of type ``AUTH_QUERY`` or ``AUTH_RESPONSE``) carried in a
`Frame Streams <https://github.com/farsightsec/fstrm>`_ (fstrm) stream of content type
``protobuf:dnstap.Dnstap``, written either

* to a **file** (the unidirectional stream: a START control frame, the data frames, a STOP
  control frame when closed) -- what ``dnstap-ldns -r FILE`` and ``fstrm_dump`` read; or
* to a **unix socket** (``unix:/path``; the bidirectional stream: READY -> ACCEPT -> START,
  the data frames, STOP -> FINISH) -- what ``fstrm_capture -u``, ``dnstap -u`` (golang-dnstap)
  and dnscollector listen on.

Design (the data plane is asyncio, one worker process per core):

* **One writer per worker process**, created in the worker (the workers are spawned, and a
  writer owns a thread): with a file destination each worker writes a file of its own
  (:func:`worker_destination`: ``PATH.N`` when there are several workers), with a unix socket
  each worker opens a connection of its own to the same socket (fstrm readers accept several
  writers).  Nothing is shared between processes, so there is no lock and no ordering problem.
* **The caller never waits and never sees an error.**  :meth:`DnstapWriter.log_query` and
  friends sample, encode the protobuf by hand (a precomputed constant prefix per listener, then
  a few varints and the wire messages; no ``protobuf`` package) and append the frame to a
  queue; that is all.  A thread of the writer takes the queue in batches (every
  ``flush_interval`` seconds, or sooner when 64 KiB are waiting) and does all of the I/O:
  opening, the fstrm handshake, the writes, reconnecting with a backoff when the reader goes
  away.  While the destination is unavailable, or when the queue holds ``buffer_size`` bytes,
  messages are dropped and counted, never queued without bound.
* **Sampling** is 1 in ``sample_rate``, by a counter (deterministic: the first of every
  ``sample_rate`` is kept).  :meth:`DnstapWriter.log_exchange` takes one decision for a query
  and its response, so a sampled query always comes with its response.

A file is truncated when opened (as fstrm's file writer does: a stream has a single START);
:meth:`DnstapWriter.reopen` closes it properly and starts a new one, for log rotation.
"""

from __future__ import annotations

import collections
import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from imrs import __version__

__all__ = [
    "AUTH_QUERY",
    "AUTH_RESPONSE",
    "CONTENT_TYPE",
    "MESSAGE_TYPES",
    "DnstapConfig",
    "DnstapWriter",
    "control_frame",
    "encode_message",
    "worker_destination",
]

log = logging.getLogger("imrs.dnstap")

#: The Frame Streams content type of dnstap.
CONTENT_TYPE = b"protobuf:dnstap.Dnstap"

# Frame Streams control frames (fstrm/control.h)
CONTROL_ACCEPT = 0x01
CONTROL_START = 0x02
CONTROL_STOP = 0x03
CONTROL_READY = 0x04
CONTROL_FINISH = 0x05
CONTROL_FIELD_CONTENT_TYPE = 0x01
CONTROL_FRAME_LENGTH_MAX = 512

# dnstap.proto: Message.Type, SocketFamily, SocketProtocol
AUTH_QUERY = 1
AUTH_RESPONSE = 2
_INET, _INET6 = 1, 2
_UDP, _TCP = 1, 2

#: The message types a writer may log, by their configuration names.
MESSAGE_TYPES: dict[str, int] = {"auth-query": AUTH_QUERY, "auth-response": AUTH_RESPONSE}

_UNIX_PREFIX = "unix:"
_UNIX_PATH_MAX = 107  # sun_path is 108 octets on Linux, with the terminating NUL
_FLUSH_BYTES = 64 * 1024  # wake the I/O thread early when this much is waiting
_WRITE_BATCH = 1 << 20  # bytes per write call at most
_LOG_EVERY = 10.0  # seconds between two log lines about the same kind of failure

_BE32 = struct.Struct(">I")
_be32 = _BE32.pack
_u32le = struct.Struct("<I").pack
_SMALL_VARINTS = tuple(bytes((n,)) for n in range(128))
_NS = 1_000_000_000
_time_ns = time.time_ns


def _varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer (the short cases unrolled: ports,
    lengths).  A negative number raises ValueError."""
    if 0 <= n < 0x80:
        return _SMALL_VARINTS[n]
    if n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    if n < 0x200000:
        return bytes(((n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80, n >> 14))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _bytes_field(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _varint_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _envelope_head(identity: bytes, version: bytes) -> bytes:
    """The constant part of every ``Dnstap``: identity (1), version (2), type (15) = MESSAGE;
    the ``message`` (14) follows."""
    head = b""
    if identity:
        head += _bytes_field(1, identity)
    if version:
        head += _bytes_field(2, version)
    return head + _varint_field(15, 1)


def _pack_address(address: bytes | str) -> bytes:
    if isinstance(address, str):
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return socket.inet_pton(family, address.split("%")[0])
    return bytes(address)


def _message_prefix(kind: int, tcp: bool, peer_len: int, local: bytes, local_port: int) -> bytes:
    """The fields of a ``Message`` that are the same for every message of one kind through one
    listener: type (1), socket_family (2), socket_protocol (3), response_address (5),
    response_port (7), and the tag and length of query_address (4) whose value follows."""
    family = _INET6 if peer_len == 16 else _INET
    out = _varint_field(1, kind) + _varint_field(2, family) + _varint_field(3, _TCP if tcp else _UDP)
    if local:
        out += _bytes_field(5, local)
    if local_port:
        out += _varint_field(7, local_port)
    return out + _varint(4 << 3 | 2) + _varint(peer_len)


def encode_message(
    kind: int,
    *,
    query: bytes | None = None,
    response: bytes | None = None,
    peer: bytes | str = b"\0\0\0\0",
    peer_port: int = 0,
    tcp: bool = False,
    local: bytes | str = b"",
    local_port: int = 0,
    query_time_ns: int | None = None,
    response_time_ns: int | None = None,
    identity: bytes = b"",
    version: bytes = b"",
) -> bytes:
    """One ``Dnstap`` protobuf message (no frame), the slow general way: for tests and tools.
    The writer builds the same bytes from cached prefixes."""
    peer = _pack_address(peer)
    local = _pack_address(local)
    parts = [_message_prefix(kind, tcp, len(peer), local, local_port), peer]
    if peer_port:
        parts.append(_varint_field(6, peer_port))
    if query_time_ns is not None:
        sec, nsec = divmod(query_time_ns, _NS)
        parts += [_varint_field(8, sec), b"\x4d", _u32le(nsec)]
    if query is not None:
        parts.append(_bytes_field(10, query))
    if response_time_ns is not None:
        sec, nsec = divmod(response_time_ns, _NS)
        parts += [_varint_field(12, sec), b"\x6d", _u32le(nsec)]
    if response is not None:
        parts.append(_bytes_field(14, response))
    return _envelope_head(identity, version) + _bytes_field(14, b"".join(parts))


def control_frame(kind: int, content_type: bytes | None = None) -> bytes:
    """A Frame Streams control frame, escape and length included: ``0``, the length, the
    control type, and for READY / ACCEPT / START the content type field."""
    body = _be32(kind)
    if content_type is not None and kind not in (CONTROL_STOP, CONTROL_FINISH):
        body += _be32(CONTROL_FIELD_CONTENT_TYPE) + _be32(len(content_type)) + content_type
    return _be32(0) + _be32(len(body)) + body


class FrameStreamError(Exception):
    """The reader at the other end did not follow the Frame Streams handshake."""


def _parse_control(body: bytes) -> tuple[int, list[bytes]]:
    """The type and the content types of a control frame's body."""
    if len(body) < 4:
        raise FrameStreamError("control frame too short")
    kind = _BE32.unpack_from(body)[0]
    types: list[bytes] = []
    pos = 4
    while pos < len(body):
        if pos + 8 > len(body):
            raise FrameStreamError("truncated control frame field")
        field_type, length = struct.unpack_from(">II", body, pos)
        pos += 8
        if field_type != CONTROL_FIELD_CONTENT_TYPE or pos + length > len(body):
            raise FrameStreamError(f"bad control frame field {field_type}")
        types.append(body[pos : pos + length])
        pos += length
    return kind, types


def worker_destination(destination: str, index: int, count: int) -> str:
    """The destination of worker ``index`` of ``count``: a file gets the suffix ``.INDEX``
    when there are several workers (each writes a stream of its own); a unix socket is shared
    (each worker opens a connection of its own)."""
    if destination.startswith(_UNIX_PREFIX) or count <= 1:
        return destination
    return f"{destination}.{index}"


# --------------------------------------------------------------------------
# Sinks: where the frames go.  Used by the I/O thread only; they raise OSError (or
# FrameStreamError) and the thread deals with it.
# --------------------------------------------------------------------------


class _FileSink:
    """A unidirectional stream in a file: START, the data, STOP."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1
        self._offset = 0

    def __str__(self) -> str:
        return self.path

    def open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
        self._fd, self._offset = fd, 0
        try:
            self.write(control_frame(CONTROL_START, CONTENT_TYPE))
        except OSError:
            self.close(clean=False)
            raise

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        start = self._offset
        try:
            while view:
                done = os.write(self._fd, view)
                view = view[done:]
                self._offset += done
        except OSError:
            # a partial batch would corrupt the stream: cut it off, the file stays readable
            try:
                os.ftruncate(self._fd, start)
                os.lseek(self._fd, start, os.SEEK_SET)
                self._offset = start
            except OSError:
                pass
            raise

    def alive(self) -> bool:
        return True

    def close(self, clean: bool) -> None:
        if self._fd < 0:
            return
        try:
            if clean:
                self.write(control_frame(CONTROL_STOP))
        finally:
            os.close(self._fd)
            self._fd = -1


class _UnixSink:
    """A bidirectional stream over a unix socket: READY -> ACCEPT -> START, the data, then
    STOP -> FINISH."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._poll: select.poll | None = None

    def __str__(self) -> str:
        return _UNIX_PREFIX + self.path

    def open(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.path)
            sock.sendall(control_frame(CONTROL_READY, CONTENT_TYPE))
            kind, types = self._read_control(sock)
            if kind != CONTROL_ACCEPT:
                raise FrameStreamError(f"expected ACCEPT, got control frame type {kind}")
            # an ACCEPT without content types accepts anything (fstrm_control_match_field_content_type)
            if types and CONTENT_TYPE not in types:
                raise FrameStreamError(f"the reader does not accept {CONTENT_TYPE.decode()}: {types}")
            sock.sendall(control_frame(CONTROL_START, CONTENT_TYPE))
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)

    @staticmethod
    def _read_exact(sock: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            if not chunk:
                raise FrameStreamError("the reader closed the connection")
            data += chunk
        return data

    def _read_control(self, sock: socket.socket) -> tuple[int, list[bytes]]:
        escape, length = struct.unpack(">II", self._read_exact(sock, 8))
        if escape != 0:
            raise FrameStreamError("expected a control frame, got a data frame")
        if length > CONTROL_FRAME_LENGTH_MAX:
            raise FrameStreamError(f"control frame of {length} octets")
        return _parse_control(self._read_exact(sock, length))

    def write(self, data: bytes) -> None:
        assert self._sock is not None
        self._sock.sendall(data)  # a timeout (the reader stopped reading) is an OSError too

    def alive(self) -> bool:
        """Whether the reader is still there: it sends nothing before our STOP, so anything
        readable (end of file, an error, an early FINISH) means it is gone or going."""
        return self._poll is not None and not self._poll.poll(0)

    def close(self, clean: bool) -> None:
        sock, self._sock, self._poll = self._sock, None, None
        if sock is None:
            return
        try:
            if clean:
                sock.sendall(control_frame(CONTROL_STOP))
                kind, _ = self._read_control(sock)
                if kind != CONTROL_FINISH:
                    raise FrameStreamError(f"expected FINISH, got control frame type {kind}")
        finally:
            sock.close()


# --------------------------------------------------------------------------
# The writer
# --------------------------------------------------------------------------


class DnstapWriter:
    """Logs queries and responses as dnstap to ``destination`` (a file path, or
    ``unix:/path``).  Create one per worker process, :meth:`start` it, call the ``log_*``
    methods from the data plane, :meth:`close` it at shutdown.

    The ``log_*`` methods never block and never raise: they sample, encode and queue; a thread
    writes.  ``peer`` and ``local`` are packed addresses (4 or 16 octets, what the data plane
    has; text is accepted too), the family is the peer's; times are ``time.time_ns()`` values
    (now when left out); wire messages are DNS messages without the TCP length prefix.
    """

    def __init__(
        self,
        destination: str,
        *,
        message_types: Iterable[str] = tuple(MESSAGE_TYPES),
        sample_rate: int = 1,
        identity: str | None = None,
        version: str | None = None,
        flush_interval: float = 0.25,
        buffer_size: int = 4 << 20,
        timeout: float = 2.0,
        reconnect_min: float = 0.1,
        reconnect_max: float = 5.0,
    ) -> None:
        if sample_rate < 1:
            raise ValueError("sample_rate must be at least 1")
        types = set(message_types)
        unknown = types - set(MESSAGE_TYPES)
        if unknown:
            raise ValueError(f"unknown dnstap message types: {sorted(unknown)}")
        self.destination = destination
        self._sink: _FileSink | _UnixSink
        if destination.startswith(_UNIX_PREFIX):
            self._sink = _UnixSink(destination[len(_UNIX_PREFIX) :], timeout)
        else:
            self._sink = _FileSink(destination)
        self._log_queries = "auth-query" in types
        self._log_responses = "auth-response" in types
        self._rate = sample_rate
        identity = socket.gethostname() if identity is None else identity
        version = "imrs " + __version__ if version is None else version
        self._head = _envelope_head(identity.encode(), version.encode()) + b"\x72"
        self._head_len = len(self._head)
        self._flush_interval = flush_interval
        self._buffer_size = buffer_size
        self._reconnect_min = reconnect_min
        self._reconnect_max = reconnect_max
        # (tcp, local, local_port, len(peer)) -> (query prefix, response prefix, fixed lengths)
        self._prefixes: dict[tuple[bool, bytes | str, int, int], tuple[bytes, bytes, int, int]] = {}
        self._last_sec = -1
        self._last_sec_varint = b""
        # the data plane's side (only the data plane's thread writes these)
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued = 0  # bytes ever queued
        self._since_wake = 0
        self._q_tick = sample_rate - 1  # so that the first message is kept
        self._r_tick = sample_rate - 1
        self._sampled_out = 0
        self._dropped_caller = 0
        self._errors = 0
        self._last_error_log = 0.0
        # the I/O thread's side (only the I/O thread writes these)
        self._up = False
        self._settled = 0  # bytes ever written or dropped by the I/O thread
        self._written = 0
        self._dropped_io = 0
        self._io_errors = 0
        self._connects = 0
        self._last_io_log = 0.0
        # control
        self._wake = threading.Event()
        self._stopping = False
        self._reopen = False
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, config: DnstapConfig, worker: int = 0, workers: int = 1,
                    **options: Any) -> DnstapWriter:
        """The writer of worker ``worker`` of ``workers`` for a ``[dnstap]`` configuration;
        ``options`` go to the constructor (timeouts, backoff)."""
        return cls(
            worker_destination(config.destination, worker, workers),
            message_types=config.message_types,
            sample_rate=config.sample_rate,
            identity=config.identity,
            version=config.version,
            flush_interval=config.flush_interval,
            buffer_size=config.buffer_size,
            **options,
        )

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Open the destination (once, here, so that a file has the first messages; a unix
        socket handshake waits at most ``timeout``) and start the I/O thread, which retries
        when this first attempt fails."""
        if self._thread is not None:
            return
        self._open_sink()
        self._thread = threading.Thread(target=self._run, name="dnstap", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, end the stream (STOP, and FINISH from a socket's reader),
        stop the thread.  Messages logged afterwards are dropped."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def reopen(self) -> None:
        """End the current stream and start a new one (a file is created anew: log rotation)."""
        self._reopen = True
        self._wake.set()

    def flush(self, timeout: float | None = None) -> bool:
        """Have the I/O thread write what is queued now, and with ``timeout`` wait (blocking:
        not for the data plane) until it is written or dropped; False if that took too long."""
        target = self._queued
        self._wake.set()
        if timeout is None:
            return True
        deadline = time.monotonic() + timeout
        while self._settled < target:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    @property
    def connected(self) -> bool:
        """Whether the destination is open (a file) or the reader has accepted (a socket)."""
        return self._up

    def wait_connected(self, timeout: float) -> bool:
        """Wait (blocking) until :attr:`connected`; for tests and start-up."""
        deadline = time.monotonic() + timeout
        while not self._up:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    # -- counters ----------------------------------------------------------------------------

    @property
    def written(self) -> int:
        """Messages handed to the destination."""
        return self._written

    @property
    def dropped(self) -> int:
        """Messages lost: destination unavailable, queue full, write failed."""
        return self._dropped_caller + self._dropped_io

    @property
    def sampled_out(self) -> int:
        """Messages not logged because of sampling."""
        return self._sampled_out

    def counters(self) -> dict[str, int]:
        """Everything counted, for telemetry."""
        return {
            "written": self._written,
            "dropped": self.dropped,
            "sampled_out": self._sampled_out,
            "errors": self._errors,
            "io_errors": self._io_errors,
            "connects": self._connects,
            "queued_bytes": self._queued - self._settled,
        }

    # -- the data plane's calls --------------------------------------------------------------

    def log_query(self, wire: bytes, peer: bytes | str, peer_port: int, *, tcp: bool = False,
                  local: bytes | str = b"", local_port: int = 0, time_ns: int | None = None) -> None:
        """Log an AUTH_QUERY (if that type is logged and the sampling keeps it)."""
        if not self._log_queries:
            return
        tick = self._q_tick + 1
        if tick < self._rate:
            self._q_tick = tick
            self._sampled_out += 1
            return
        self._q_tick = 0
        if not self._up:
            self._dropped_caller += 1
            return
        try:
            self._encode(wire, None, peer, peer_port, tcp, local, local_port,
                         _time_ns() if time_ns is None else time_ns, None)
        except Exception:  # noqa: BLE001 - never into the data plane: count, log, go on
            self._internal_error(1)

    def log_response(self, wire: bytes, peer: bytes | str, peer_port: int, *, tcp: bool = False,
                     local: bytes | str = b"", local_port: int = 0, time_ns: int | None = None,
                     query_time_ns: int | None = None) -> None:
        """Log an AUTH_RESPONSE (if that type is logged and the sampling keeps it; the
        responses have a sampling counter of their own, in step with the queries' as long as
        every query logged gets a response logged: else use :meth:`log_exchange`)."""
        if not self._log_responses:
            return
        tick = self._r_tick + 1
        if tick < self._rate:
            self._r_tick = tick
            self._sampled_out += 1
            return
        self._r_tick = 0
        if not self._up:
            self._dropped_caller += 1
            return
        try:
            self._encode(None, wire, peer, peer_port, tcp, local, local_port, query_time_ns,
                         _time_ns() if time_ns is None else time_ns)
        except Exception:  # noqa: BLE001 - never into the data plane: count, log, go on
            self._internal_error(1)

    def log_exchange(self, query: bytes, response: bytes | None, peer: bytes | str, peer_port: int, *,
                     tcp: bool = False, local: bytes | str = b"", local_port: int = 0,
                     query_time_ns: int | None = None, response_time_ns: int | None = None) -> None:
        """Log a query and its response (None: none was sent) with one sampling decision: the
        call for the data plane, once per query answered."""
        if not self._log_responses:
            response = None
        elif response is None and not self._log_queries:
            return
        count = self._log_queries + (response is not None)
        if not count:
            return
        tick = self._q_tick + 1
        if tick < self._rate:
            self._q_tick = tick
            self._sampled_out += count
            return
        self._q_tick = 0
        if not self._up:
            self._dropped_caller += count
            return
        try:
            if query_time_ns is None:
                query_time_ns = _time_ns()
            if response is not None and response_time_ns is None:
                response_time_ns = _time_ns()
            self._encode(query if self._log_queries else None, response, peer, peer_port, tcp, local,
                         local_port, query_time_ns, response_time_ns)
        except Exception:  # noqa: BLE001 - never into the data plane: count, log, go on
            self._internal_error(count)

    # -- encoding (the data plane's thread) --------------------------------------------------

    def _encode(self, query: bytes | None, response: bytes | None, peer: bytes | str, peer_port: int,
                tcp: bool, local: bytes | str, local_port: int, query_time_ns: int | None,
                response_time_ns: int | None) -> None:
        """Frame and queue an AUTH_QUERY (``query`` given) and an AUTH_RESPONSE (``response``
        given).  Written flat, one ``join`` per frame and lengths added up rather than nested
        messages serialized in turn: this runs once per query in the data plane."""
        if peer.__class__ is not bytes:
            peer = _pack_address(peer)
        prefixes = self._prefixes.get((tcp, local, local_port, len(peer)))
        if prefixes is None:
            prefixes = self._new_prefixes(tcp, local, local_port, len(peer))
        # the initiator's port and the query's time: the same in both messages
        if query_time_ns is not None:
            sec, nsec = divmod(query_time_ns, _NS)
            if sec != self._last_sec:  # the varint of the seconds changes once a second
                self._last_sec, self._last_sec_varint = sec, _varint(sec)
            shared = b"".join((b"\x30", _varint(peer_port), b"\x40", self._last_sec_varint, b"\x4d", _u32le(nsec)))
        else:
            shared = b"\x30" + _varint(peer_port)
        # prefixes: (query prefix, response prefix, and the octets of each message that are
        # fixed for the listener: prefix, peer address, constant tags)
        head = self._head  # Dnstap identity, version, type, and the tag of its message (14)
        head_len = self._head_len
        shared_len = len(shared)
        size = 0
        if query is not None:
            wire_len = _varint(len(query))
            message_len = prefixes[2] + shared_len + len(wire_len) + len(query)
            varint_len = _varint(message_len)
            body_len = head_len + len(varint_len) + message_len
            query_frame = b"".join((_be32(body_len), head, varint_len, prefixes[0], peer, shared,
                                    b"\x52", wire_len, query))
            size = body_len + 4
        if response is not None:
            sec, nsec = divmod(response_time_ns, _NS)  # type: ignore[call-overload]
            sec_varint = self._last_sec_varint if sec == self._last_sec else _varint(sec)
            wire_len = _varint(len(response))
            message_len = prefixes[3] + shared_len + len(sec_varint) + len(wire_len) + len(response)
            varint_len = _varint(message_len)
            body_len = head_len + len(varint_len) + message_len
            response_frame = b"".join((_be32(body_len), head, varint_len, prefixes[1], peer, shared,
                                       b"\x60", sec_varint, b"\x6d", _u32le(nsec), b"\x72", wire_len, response))
            size += body_len + 4
        if self._queued - self._settled + size > self._buffer_size:
            # the writer cannot keep up: drop, never grow
            self._dropped_caller += (query is not None) + (response is not None)
            return
        if query is not None:
            self._queue.append(query_frame)
        if response is not None:
            self._queue.append(response_frame)
        self._queued += size
        self._since_wake += size
        if self._since_wake >= _FLUSH_BYTES:
            self._since_wake = 0
            self._wake.set()

    def _new_prefixes(self, tcp: bool, local: bytes | str, local_port: int,
                      peer_len: int) -> tuple[bytes, bytes, int, int]:
        """The constant starts of the two kinds of message through one listener (cached), and
        how many octets of each message do not depend on the message."""
        if peer_len not in (4, 16):
            raise ValueError(f"a peer address of {peer_len} octets")
        packed = _pack_address(local)
        if packed and len(packed) != peer_len:
            raise ValueError("the local and the peer address are of different families")
        query = _message_prefix(AUTH_QUERY, tcp, peer_len, packed, local_port)
        response = _message_prefix(AUTH_RESPONSE, tcp, peer_len, packed, local_port)
        # + the tag of query_message; + the tags of response_time_sec, _nsec, response_message
        # and the 4 octets of the fixed32
        entry = (query, response, len(query) + peer_len + 1, len(response) + peer_len + 7)
        if len(self._prefixes) >= 1024:  # listeners are few; bounded whatever the caller does
            self._prefixes.clear()
        self._prefixes[(tcp, local, local_port, peer_len)] = entry
        return entry

    def _internal_error(self, count: int) -> None:
        self._errors += 1
        self._dropped_caller += count
        now = time.monotonic()
        if now - self._last_error_log > _LOG_EVERY:
            self._last_error_log = now
            log.exception("dnstap: cannot log a message (further ones are counted, logged every %g s)", _LOG_EVERY)

    # -- the I/O thread ----------------------------------------------------------------------

    def _run(self) -> None:
        backoff = self._reconnect_min
        while True:
            if not self._up:
                self._discard()
                if self._stopping:
                    break
                self._wake.wait(backoff)  # close() interrupts the wait
                self._wake.clear()
                self._reopen = False
                if self._stopping:
                    self._discard()
                    break
                if self._open_sink():
                    backoff = self._reconnect_min
                else:
                    backoff = min(backoff * 2, self._reconnect_max)
                    continue
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            if not self._sink.alive():
                self._lost("the reader went away")
                continue
            self._drain()
            if self._stopping:
                if self._up:
                    self._close_sink(clean=True)
                self._discard()
                break
            if self._reopen and self._up:
                self._reopen = False
                self._close_sink(clean=True)
                self._open_sink()  # when it fails, the loop above retries with backoff

    def _open_sink(self) -> bool:
        try:
            self._sink.open()
        except (OSError, FrameStreamError) as exc:
            self._io_error(f"cannot open {self._sink}", exc)
            return False
        self._connects += 1
        self._up = True
        log.info("dnstap: writing to %s", self._sink)
        return True

    def _close_sink(self, clean: bool) -> None:
        self._up = False
        try:
            self._sink.close(clean)
        except (OSError, FrameStreamError) as exc:
            self._io_error(f"cannot close {self._sink} cleanly", exc)

    def _lost(self, reason: str | BaseException) -> None:
        self._io_error(f"lost {self._sink}", reason)
        self._close_sink(clean=False)
        self._discard()

    def _drain(self) -> None:
        """Write everything queued, in batches of at most ``_WRITE_BATCH`` bytes."""
        queue = self._queue
        while queue:
            batch: list[bytes] = []
            size = 0
            while size < _WRITE_BATCH:
                try:
                    frame = queue.popleft()
                except IndexError:
                    break
                batch.append(frame)
                size += len(frame)
            try:
                self._sink.write(b"".join(batch))
            except (OSError, FrameStreamError) as exc:
                self._dropped_io += len(batch)
                self._settled += size
                self._lost(exc)
                return
            self._written += len(batch)
            self._settled += size

    def _discard(self) -> None:
        """Drop what is queued (the destination is not there), counting it."""
        queue = self._queue
        while True:
            try:
                frame = queue.popleft()
            except IndexError:
                return
            self._dropped_io += 1
            self._settled += len(frame)

    def _io_error(self, what: str, exc: str | BaseException) -> None:
        self._io_errors += 1
        now = time.monotonic()
        if now - self._last_io_log > _LOG_EVERY:
            self._last_io_log = now
            log.warning("dnstap: %s: %s (messages are dropped meanwhile; logged every %g s)", what, exc, _LOG_EVERY)


# --------------------------------------------------------------------------
# Configuration: the [dnstap] table
# --------------------------------------------------------------------------


def _hostname() -> str:
    try:
        return socket.gethostname()
    except OSError:  # pragma: no cover - practically never happens
        return "localhost"


@dataclass(frozen=True)
class DnstapConfig:
    """The ``[dnstap]`` table::

        [dnstap]
        enabled = true                      # default true when the table is there
        destination = "unix:/run/dnstap.sock"   # or a file path (PATH.N per worker when several)
        message-types = ["auth-query", "auth-response"]
        sample-rate = 1                     # log 1 query in N (with its response)
        identity = "l1.example"             # default: the host name, as NSD; "" = not sent
        version = "imrs 0.1.0"              # "" = not sent
        flush-interval = 0.25               # seconds between two writes at most
        buffer-size = 4194304               # bytes queued per worker at most, then dropped
    """

    enabled: bool = False
    #: A file path, or ``unix:`` and the path of a socket.
    destination: str = ""
    message_types: tuple[str, ...] = tuple(MESSAGE_TYPES)
    sample_rate: int = 1
    identity: str = field(default_factory=_hostname)
    version: str = "imrs " + __version__
    flush_interval: float = 0.25
    buffer_size: int = 4 << 20

    @property
    def socket_path(self) -> str | None:
        """The unix socket's path, None for a file."""
        if self.destination.startswith(_UNIX_PREFIX):
            return self.destination[len(_UNIX_PREFIX) :]
        return None

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str, *, base_dir: str | None = None,
                   line_for: Callable[[tuple[str, ...]], int | None] | None = None) -> DnstapConfig:
        """Validate a ``[dnstap]`` table (as :mod:`tomllib` parsed it).  Every problem is
        reported, in one :class:`~imrs.config.ConfigError` whose issues name ``where`` (the
        file), the key (``dnstap.KEY``) and the line ``line_for(("dnstap", KEY))`` gives.
        Relative paths are taken from ``base_dir`` (the configuration file's directory)."""
        # imported here: imrs.config will import this module to build its Settings
        from imrs.config import (
            ConfigError,
            ConfigIssue,
            _Invalid,
            _suggest,
            _want_bool,
            _want_int,
            _want_str,
            _want_strings,
            _wrong_type,
        )

        issues: list[ConfigIssue] = []

        def add(path: tuple[str, ...], message: str) -> None:
            line = line_for(path) if line_for is not None else None
            issues.append(ConfigIssue(where, line, ".".join(path), message))

        def destination(value: object) -> str:
            text = _want_str(value)
            unix = text.startswith(_UNIX_PREFIX)
            path = text[len(_UNIX_PREFIX) :] if unix else text
            if not path:
                raise _Invalid("the path is empty" + ("" if unix else "; write a file path or unix:/path/to/socket"))
            path = os.path.expanduser(path)
            if base_dir is not None:
                path = os.path.abspath(os.path.join(base_dir, path))
            if unix:
                if len(os.fsencode(path)) > _UNIX_PATH_MAX:
                    raise _Invalid(f"unix socket path is longer than {_UNIX_PATH_MAX} octets: {path}")
                return _UNIX_PREFIX + path
            if os.path.isdir(path):
                raise _Invalid(f"is a directory, not a file: {path}")
            parent = os.path.dirname(path) or "."
            if not os.path.isdir(parent):
                raise _Invalid(f"directory does not exist: {parent}")
            return path

        def message_types(value: object) -> tuple[str, ...]:
            names: list[str] = []
            for item in _want_strings(value):
                name = item.lower().replace("_", "-")
                if name not in MESSAGE_TYPES:
                    raise _Invalid(f"unknown message type {item!r}{_suggest(name, MESSAGE_TYPES)}; "
                                   f"expected {' or '.join(MESSAGE_TYPES)}")
                if name not in names:
                    names.append(name)
            if not names:
                raise _Invalid("no message type: give at least one of " + ", ".join(MESSAGE_TYPES))
            return tuple(name for name in MESSAGE_TYPES if name in names)

        def seconds(value: object) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _wrong_type("a number of seconds", value)
            if not 0 < value <= 60:
                raise _Invalid(f"must be greater than 0 and at most 60 seconds, got {value}")
            return float(value)

        keys: dict[str, tuple[str, Callable[[object], object]]] = {
            "enabled": ("enabled", _want_bool),
            "destination": ("destination", destination),
            "message-types": ("message_types", message_types),
            "sample-rate": ("sample_rate", lambda v: _want_int(v, 1, 10**9)),
            "identity": ("identity", _want_str),
            "version": ("version", _want_str),
            "flush-interval": ("flush_interval", seconds),
            "buffer-size": ("buffer_size", lambda v: _want_int(v, 65536, 1 << 30)),
        }
        fields: dict[str, Any] = {"enabled": True}
        for key, value in table.items():
            if key not in keys:
                add(("dnstap", key), f"unknown key{_suggest(key, keys)}")
                continue
            attr, convert = keys[key]
            try:
                fields[attr] = convert(value)
            except _Invalid as exc:
                add(("dnstap", key), str(exc))
        if fields["enabled"] and "destination" not in fields and "destination" not in table:
            add(("dnstap",), "missing required key 'destination'")
        if issues:
            raise ConfigError.from_issues(issues)
        return cls(**fields)
