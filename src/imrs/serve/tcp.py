"""DNS over TCP (RFC 7766): two-octet framing, pipelining, idle timeout, a connection cap.

Each connection is one asyncio task that reads framed queries and writes responses in
order.  A client that goes quiet for ``idle_timeout`` seconds, sends a half message, or
does not read its responses (the write buffer stays full past the timeout) is closed;
connections over ``max_connections`` are closed on accept.  AXFR and IXFR queries are
answered by :mod:`imrs.serve.xfrout` (in a worker thread: the first transfer of a version
renders it), and their many messages are written with the same flow control.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time

from imrs.serve.notify_in import NotifyReceiver
from imrs.serve.snapshot import SnapshotHolder
from imrs.serve.udp import ServeStats
from imrs.serve.xfrout import TransferPolicy, answer_transfer, transfer_qtype

log = logging.getLogger("imrs.tcp")


_LINGER_RESET = struct.pack("ii", 1, 0)


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


class TcpListener:
    """One listening TCP socket and its connections."""

    def __init__(
        self,
        sock: socket.socket,
        holder: SnapshotHolder,
        stats: ServeStats,
        *,
        idle_timeout: float = 10.0,
        max_connections: int = 1000,
        max_queries: int = 0,
        transfer_policy: TransferPolicy | None = None,
        notify: NotifyReceiver | None = None,
    ):
        self.sock = sock
        self.holder = holder
        self.stats = stats
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.max_queries = max_queries
        self.transfer_policy = transfer_policy or TransferPolicy()
        self.notify = notify
        self.ipv6 = sock.family == socket.AF_INET6
        self.active: set[asyncio.Task] = set()
        self.server: asyncio.AbstractServer | None = None
        self._last_error_log = 0.0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, sock=self.sock, limit=65536 + 2)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.active):
            task.cancel()
        if self.active:
            await asyncio.gather(*self.active, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.active) >= self.max_connections:
            self.stats.tcp_refused += 1
            writer.transport.abort()
            return
        task = asyncio.current_task()
        self.active.add(task)
        self.stats.tcp_connections += 1
        graceful = False
        try:
            await self._serve(reader, writer)
            # The client is done sending (or reached the per-connection limit): what it asked
            # is still owed (RFC 7766 6.2.4), so flush the answers before closing.
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
            self.active.discard(task)
            if not graceful:
                _reset(writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = 0
        peer = writer.get_extra_info("peername")
        peer_address = peer[0] if isinstance(peer, tuple) else ""
        while True:
            try:
                async with asyncio.timeout(self.idle_timeout):
                    prefix = await reader.readexactly(2)
                    length = (prefix[0] << 8) | prefix[1]
                    wire = await reader.readexactly(length) if length else b""
            except TimeoutError:
                self.stats.tcp_timeouts += 1
                raise  # idle: close at once, nothing is owed
            except asyncio.IncompleteReadError:
                return  # the client closed its side, perhaps mid-message
            self.stats.tcp_queries += 1
            try:
                if transfer_qtype(wire) is not None:
                    responses = await asyncio.to_thread(
                        answer_transfer, wire, peer_address, self.holder.current, self.transfer_policy, ipv6=self.ipv6
                    )
                else:
                    response = None
                    if self.notify is not None and NotifyReceiver.is_notify(wire):
                        response = self.notify.handle(wire, peer_address)
                    if response is None:
                        response = self.holder.current.answer(wire, True, self.ipv6)
                    responses = [response] if response is not None else []
            except Exception:  # noqa: BLE001 - a bug must cost this connection, not the server
                self._internal_error()
                return
            for response in responses:
                writer.write(len(response).to_bytes(2, "big") + response)
                if writer.transport.get_write_buffer_size() > 65536:
                    async with asyncio.timeout(self.idle_timeout):
                        await writer.drain()  # a client that does not read is dropped
            served += 1
            if self.max_queries and served >= self.max_queries:
                return

    def _internal_error(self) -> None:
        self.stats.internal_errors += 1
        now = time.monotonic()
        if now - self._last_error_log > 10:
            self._last_error_log = now
            log.exception("internal error answering a TCP query (further ones are counted, logged every 10 s)")
