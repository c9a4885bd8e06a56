"""DNS over TCP (RFC 7766): two-octet framing, pipelining, timeouts, connection limits.

Each connection is one asyncio task that reads framed queries and writes responses in
order.  AXFR and IXFR queries are answered by :mod:`imrs.serve.xfrout` (in a worker thread:
the first transfer of a version renders it), and their many messages are written with the
same flow control.

Limits, so that idle or slow clients cannot take the TCP service away from the others (the
TCP exhaustion attack):

* ``idle_timeout``: a client that goes quiet for this long between queries, or takes longer
  to send one whole message (a half message then silence), or does not read its responses
  (the write buffer stays full past the timeout) is closed.
* ``max_connections_per_source``: a new connection from an address that already holds this
  many is closed at once (``tcp_refused``).
* ``max_connections``: when this many are open, a new connection makes room by closing the
  connection that has been idle the longest (waiting for a query, none being answered);
  only when none is idle is the new one refused.
* Under pressure (more than half of ``max_connections`` open) idle connections are closed
  after :attr:`TcpListener.pressure_idle_timeout` (a tenth of ``idle_timeout``, at least
  0.5 s, never more than ``idle_timeout``), as RFC 7766 section 6.2.3 suggests.
* ``session_timeout``: a connection is closed this long after it was accepted, however
  busy: the answer in progress is still written, with at most ``idle_timeout`` more to
  flush it, and queries it pipelined after that are not answered.

Idle connections are kept in an OrderedDict, the longest idle first, so that the one to
evict, and the next one the pressure timeout closes, are found at its head.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import struct
import time
from collections import OrderedDict

from imrs.serve.notify_in import NotifyReceiver
from imrs.serve.snapshot import SnapshotHolder
from imrs.serve.traffic import TrafficCounters
from imrs.serve.udp import ServeStats
from imrs.serve.xfrout import TransferPolicy, answer_transfer, transfer_qtype
from imrs.telemetry.dnstap import DnstapWriter

try:
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]

log = logging.getLogger("imrs.tcp")


_LINGER_RESET = struct.pack("ii", 1, 0)

#: File descriptors kept in reserve beyond the TCP connections (zone files, UDP sockets,
#: the listening sockets, worker threads' files, logging ...).
FD_RESERVE = 256

#: Under pressure idle connections get this fraction of the idle timeout ...
PRESSURE_FRACTION = 0.1
#: ... but at least this many seconds (a client's next pipelined query must have a chance).
PRESSURE_MINIMUM = 0.5


def _reset(writer: asyncio.StreamWriter) -> None:
    """Drop a connection at once: with SO_LINGER 0 the kernel discards what the client has not
    read and sends a reset, instead of trickling megabytes to a client that does not read."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass
    writer.transport.abort()


# Connections all listeners of this process may hold, for the file descriptor limit.
_fd_demand = 0
_fd_warned = False


def ensure_fd_limit(connections: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards the hard limit so that ``connections`` sockets and
    :data:`FD_RESERVE` more fit; warn (once a process) if it stays too low.  The soft limit."""
    global _fd_warned
    if resource is None:
        return -1
    need = connections + FD_RESERVE
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return -1
    if soft == resource.RLIM_INFINITY or soft >= need:
        return soft
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass
    if soft < need and not _fd_warned:
        _fd_warned = True
        log.warning("the open file limit is %d (hard limit %s), too low for %d TCP connections and %d more "
                    "files: connections may fail to be accepted; raise it (ulimit -n, LimitNOFILE=) or "
                    "lower tcp-max-connections", soft, "unlimited" if hard == resource.RLIM_INFINITY else hard,
                    connections, FD_RESERVE)
    return soft


class _Conn:
    """What the limits need to know of one connection."""

    __slots__ = ("idle_since", "released", "session_end", "source", "task", "writer")

    def __init__(self, task: asyncio.Task, writer: asyncio.StreamWriter, source: str, now: float, session_end: float):
        self.task = task
        self.writer = writer
        self.source = source
        self.idle_since = now
        self.session_end = session_end
        self.released = False


class TcpListener:
    """One listening TCP socket and its connections.

    Counters beyond :class:`ServeStats` (plain ints): ``evictions`` (idle connections closed to
    make room for a new one), ``refused_per_source`` and ``refused_full`` (the two reasons for
    ``tcp_refused``), ``pressure_timeouts`` (idle connections closed by the shorter timeout
    under pressure; also counted in ``tcp_timeouts``), ``session_closes`` (connections closed
    at the end of their session).
    """

    def __init__(
        self,
        sock: socket.socket,
        holder: SnapshotHolder,
        stats: ServeStats,
        *,
        idle_timeout: float = 10.0,
        max_connections: int = 1000,
        max_connections_per_source: int = 64,
        session_timeout: float = 120.0,
        max_queries: int = 0,
        transfer_policy: TransferPolicy | None = None,
        notify: NotifyReceiver | None = None,
        traffic: TrafficCounters | None = None,
        tap: DnstapWriter | None = None,
    ):
        self.sock = sock
        self.traffic = traffic  # the worker's traffic counters (None: not kept)
        self.tap = tap  # dnstap (None: off)
        self.holder = holder
        self.stats = stats
        self.idle_timeout = idle_timeout
        self.max_connections = max(1, max_connections)
        self.max_connections_per_source = max(1, max_connections_per_source)
        self.session_timeout = session_timeout if session_timeout > 0 else math.inf
        self.pressure_idle_timeout = min(idle_timeout, max(idle_timeout * PRESSURE_FRACTION, PRESSURE_MINIMUM))
        self.max_queries = max_queries
        self.transfer_policy = transfer_policy or TransferPolicy()
        self.notify = notify
        self.ipv6 = sock.family == socket.AF_INET6
        #: the connections counted against the limits (an evicted one leaves at once)
        self.active: dict[asyncio.Task, _Conn] = {}
        #: source address -> connections it holds
        self.per_source: dict[str, int] = {}
        #: idle connections (reading a query), the longest idle first
        self._idle: OrderedDict[_Conn, None] = OrderedDict()
        #: every connection task still running (evicted ones included), for stop()
        self._tasks: set[asyncio.Task] = set()
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.server: asyncio.AbstractServer | None = None
        self._last_error_log = 0.0
        self._last_limit_log = -math.inf
        self._fd_counted = False
        self.evictions = 0
        self.refused_per_source = 0
        self.refused_full = 0
        self.pressure_timeouts = 0
        self.session_closes = 0

    async def start(self) -> None:
        global _fd_demand
        self._loop = asyncio.get_running_loop()
        if not self._fd_counted:
            self._fd_counted = True
            _fd_demand += self.max_connections
        ensure_fd_limit(_fd_demand)
        self.server = await asyncio.start_server(self._accept, sock=self.sock, limit=65536 + 2)

    async def stop(self) -> None:
        global _fd_demand
        if self.server is not None:
            self.server.close()
        # A connection accepted just now has a task that has not run yet: let it start (and
        # register) so it is cancelled inside _accept, which expects it, rather than before its
        # first line, which asyncio's stream callback reports as an unhandled error.
        await asyncio.sleep(0)
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._fd_counted:
            self._fd_counted = False
            _fd_demand -= self.max_connections

    @property
    def under_pressure(self) -> bool:
        """More than half of ``max_connections`` open: idle ones get the shorter timeout."""
        return len(self.active) * 2 > self.max_connections

    # ---------------------------------------------------------------- connection bookkeeping

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        source = peer[0] if isinstance(peer, tuple) else ""
        if self.per_source.get(source, 0) >= self.max_connections_per_source:
            self.stats.tcp_refused += 1
            self.refused_per_source += 1
            self._limit_log("%s holds %d TCP connections, the most one source may: closing new ones",
                            source, self.max_connections_per_source)
            writer.transport.abort()
            return
        if len(self.active) >= self.max_connections and not self._evict_idlest():
            self.stats.tcp_refused += 1
            self.refused_full += 1
            self._limit_log("%d TCP connections open, none idle: refusing new ones", len(self.active))
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None and self._loop is not None
        now = self._loop.time()
        conn = _Conn(task, writer, source, now, now + self.session_timeout)
        self.active[task] = conn
        self._tasks.add(task)
        self.per_source[source] = self.per_source.get(source, 0) + 1
        self._idle[conn] = None
        self.stats.tcp_connections += 1
        if self._sweep_handle is None and self.under_pressure:
            self._arm_sweep()
        graceful = False
        hard_end = conn.session_end + self.idle_timeout
        try:
            # the session end is checked between queries; this bounds the answer in progress
            async with asyncio.timeout_at(hard_end if math.isfinite(hard_end) else None):
                await self._serve(reader, writer, conn)
                self._idle.pop(conn, None)
                # The client is done sending (or reached a limit): what it asked is still
                # owed (RFC 7766 6.2.4), so flush the answers before closing.
                async with asyncio.timeout(self.idle_timeout):
                    await writer.drain()
                    writer.close()
                    await writer.wait_closed()
            graceful = True
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, OSError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)
            self._release(conn)
            if not graceful:
                _reset(writer)

    def _release(self, conn: _Conn) -> None:
        """Stop counting ``conn`` against the limits (once)."""
        if conn.released:
            return
        conn.released = True
        self._idle.pop(conn, None)
        self.active.pop(conn.task, None)
        left = self.per_source.get(conn.source, 1) - 1
        if left > 0:
            self.per_source[conn.source] = left
        else:
            self.per_source.pop(conn.source, None)

    def _drop(self, conn: _Conn) -> None:
        """Close an idle connection now (nothing is owed to it)."""
        self._release(conn)
        _reset(conn.writer)
        conn.task.cancel()

    def _evict_idlest(self) -> bool:
        """Close the connection idle the longest to make room; False if none is idle."""
        if not self._idle:
            return False
        self._drop(next(iter(self._idle)))
        self.evictions += 1
        self._limit_log("%d TCP connections open: closing the longest idle ones to make room", self.max_connections)
        return True

    def _busy(self, conn: _Conn) -> None:
        """``conn`` waits on an answer in progress (a transfer, a full write buffer): not idle."""
        self._idle.pop(conn, None)

    def _touch(self, conn: _Conn, now: float) -> None:
        """``conn`` is idle again from ``now``: the newest idle one."""
        conn.idle_since = now
        if conn in self._idle:
            self._idle.move_to_end(conn)
        elif not conn.released:
            self._idle[conn] = None
        if self._sweep_handle is None and self.under_pressure:
            self._arm_sweep()

    def _arm_sweep(self) -> None:
        """Close the longest idle connection when its pressure timeout runs out."""
        if self._idle and self._loop is not None:
            head = next(iter(self._idle))
            self._sweep_handle = self._loop.call_at(head.idle_since + self.pressure_idle_timeout, self._sweep)

    def _sweep(self) -> None:
        self._sweep_handle = None
        assert self._loop is not None
        now = self._loop.time()
        while self._idle and self.under_pressure:
            head = next(iter(self._idle))
            if head.idle_since + self.pressure_idle_timeout > now:
                self._arm_sweep()
                return
            self._drop(head)
            self.stats.tcp_timeouts += 1
            self.pressure_timeouts += 1
        # no pressure (any more): the next accept or answer under pressure arms it again

    def _limit_log(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last_limit_log > 60:
            self._last_limit_log = now
            log.warning(message + " (logged once a minute)", *args)

    # ---------------------------------------------------------------- one connection

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Conn) -> None:
        assert self._loop is not None
        loop = self._loop
        served = 0
        peer_address = conn.source
        try:  # packed, as DNS Cookies hash it
            peer_packed = socket.inet_pton(self.sock.family, peer_address.split("%")[0])
        except (OSError, ValueError):
            peer_packed = None
        peer_name = writer.get_extra_info("peername")
        peer_port = peer_name[1] if isinstance(peer_name, tuple) and len(peer_name) > 1 else 0
        local_name = writer.get_extra_info("sockname")
        local_port = local_name[1] if isinstance(local_name, tuple) and len(local_name) > 1 else 0
        while True:
            now = loop.time()
            deadline = now + self.idle_timeout
            session_bound = conn.session_end <= deadline
            try:
                # one deadline for the whole message: a half message then silence is idle too
                async with asyncio.timeout_at(conn.session_end if session_bound else deadline):
                    prefix = await reader.readexactly(2)
                    length = (prefix[0] << 8) | prefix[1]
                    wire = await reader.readexactly(length) if length else b""
            except TimeoutError:
                if session_bound:
                    self.session_closes += 1
                    return  # the session is over; nothing is owed
                self.stats.tcp_timeouts += 1
                raise  # idle: close at once, nothing is owed
            except asyncio.IncompleteReadError:
                return  # the client closed its side, perhaps mid-message
            self.stats.tcp_queries += 1
            began = time.monotonic()
            traffic = self.traffic
            if traffic is not None:
                traffic.query(wire, True, self.ipv6)
                if peer_packed is not None:
                    traffic.source(peer_packed)
            try:
                if transfer_qtype(wire) is not None:
                    self._busy(conn)
                    responses = await asyncio.to_thread(
                        answer_transfer, wire, peer_address, self.holder.current, self.transfer_policy, ipv6=self.ipv6
                    )
                else:
                    response = None
                    if self.notify is not None and NotifyReceiver.is_notify(wire):
                        response = self.notify.handle(wire, peer_address)
                    if response is None:
                        response = self.holder.current.answer(wire, True, self.ipv6, peer_packed)
                    responses = [response] if response is not None else []
            except Exception:  # noqa: BLE001 - a bug must cost this connection, not the server
                self._internal_error()
                return
            if self.tap is not None and peer_packed is not None:
                self.tap.log_exchange(wire, responses[0] if responses else None, peer_packed, peer_port, tcp=True,
                                      local_port=local_port)
            for response in responses:
                if traffic is not None:
                    traffic.response(response, True, self.ipv6)
                writer.write(len(response).to_bytes(2, "big") + response)
                if writer.transport.get_write_buffer_size() > 65536:
                    self._busy(conn)
                    async with asyncio.timeout(self.idle_timeout):
                        await writer.drain()  # a client that does not read is dropped
            if traffic is not None:
                traffic.latency(time.monotonic() - began, True)
            served += 1
            if self.max_queries and served >= self.max_queries:
                return
            now = loop.time()
            if now >= conn.session_end:
                self.session_closes += 1
                return  # the answer is written; it is flushed before the close
            self._touch(conn, now)

    def _internal_error(self) -> None:
        self.stats.internal_errors += 1
        now = time.monotonic()
        if now - self._last_error_log > 10:
            self._last_error_log = now
            log.exception("internal error answering a TCP query (further ones are counted, logged every 10 s)")
