"""UDP: receive, answer, send — the hot loop.

The socket is non-blocking and watched by the event loop; each wake-up drains up to
``BATCH`` datagrams, so under load one select() call serves many packets.  Nothing here may
raise into the loop: a failure to answer one packet is counted and logged (rate-limited),
and the next packet is served.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

from imrs.serve import batchio
from imrs.serve.notify_in import NotifyReceiver
from imrs.serve.snapshot import SnapshotHolder

log = logging.getLogger("imrs.udp")

BATCH = 256  # datagrams per wake-up before yielding to TCP and timers
RECV_SIZE = 65535  # a datagram is never cut short: a cut query could parse as another


class UdpListener:
    """One UDP socket bound to one address."""

    def __init__(self, sock: socket.socket, holder: SnapshotHolder, stats: "ServeStats",
                 notify: NotifyReceiver | None = None):
        self.sock = sock
        self.notify = notify
        self.holder = holder
        self.stats = stats
        self.ipv6 = sock.family == socket.AF_INET6
        self._last_error_log = 0.0
        self._batch: batchio.BatchSocket | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.sock.setblocking(False)
        if batchio.AVAILABLE:
            self._batch = batchio.BatchSocket(self.sock.fileno())
            loop.add_reader(self.sock.fileno(), self._drain_batched)
        else:
            loop.add_reader(self.sock.fileno(), self._drain)

    def stop(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def _drain(self) -> None:
        recvfrom = self.sock.recvfrom
        sendto = self.sock.sendto
        ipv6 = self.ipv6
        answer = self.holder.current.answer
        received = sent = 0
        try:
            for _ in range(BATCH):
                try:
                    wire, addr = recvfrom(RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    continue  # e.g. ICMP port unreachable reported on the socket
                received += 1
                try:
                    response = None
                    if self.notify is not None and NotifyReceiver.is_notify(wire):
                        response = self.notify.handle(wire, addr[0])
                    if response is None:
                        response = answer(wire, False, ipv6)
                except Exception:  # a bug must not stop the server: count it, log it, go on
                    self._internal_error()
                    continue
                if response is not None:
                    try:
                        sendto(response, addr)
                        sent += 1
                    except OSError:
                        self.stats.send_errors += 1
        finally:
            self.stats.udp_received += received
            self.stats.udp_sent += sent

    def _drain_batched(self) -> None:
        batch = self._batch
        ipv6 = self.ipv6
        answer = self.holder.current.answer
        stats = self.stats
        for _ in range(BATCH // batchio.VLEN):
            try:
                wires = batch.receive()
            except OSError:
                return
            if not wires:
                return
            stats.udp_received += len(wires)
            if self.notify is not None and any(NotifyReceiver.is_notify(w) for w in wires):
                stats.udp_sent += batch.reply([self._answer_one(batch, i, w, answer) for i, w in enumerate(wires)])
            else:
                stats.udp_sent += batch.answer_and_reply(wires, answer, ipv6, self._internal_error)
            if len(wires) < batchio.VLEN:
                return

    def _answer_one(self, batch: batchio.BatchSocket, i: int, wire: bytes, answer) -> bytes | None:
        try:
            if NotifyReceiver.is_notify(wire):
                response = self.notify.handle(wire, batch.peer(i))
                if response is not None:
                    return response
            return answer(wire, False, self.ipv6)
        except Exception:
            self._internal_error()
            return None

    def _internal_error(self) -> None:
        self.stats.internal_errors += 1
        now = time.monotonic()
        if now - self._last_error_log > 10:
            self._last_error_log = now
            log.exception("internal error answering a UDP query (further ones are counted, logged every 10 s)")


class ServeStats:
    """Plain counters the listeners bump (exported by the telemetry work later)."""

    __slots__ = ("udp_received", "udp_sent", "tcp_connections", "tcp_refused", "tcp_queries", "tcp_timeouts", "send_errors", "internal_errors")

    def __init__(self):
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}
